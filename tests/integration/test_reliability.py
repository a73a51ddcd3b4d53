"""Reliability: untrusted text stays in its place, nothing is unpickled or unsafely loaded.

Also the support the other `test_reliability_*` modules share: a test-only plugin package
installed on sys.path (so worker subprocesses find it too), a private temporary directory, and
the checks run after every fault (the run is readable by `infercmp report`, nothing is left).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest
from synthetic_runs import only_run
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.store.run_store import RunStore

REPO = Path(__file__).resolve().parents[2]
FAST = ["--warmup", "5", "--iters", "20"]
MARKER_ENV = "INFERCMP_RELIABILITY_MARK"  # finds this test's worker processes, even orphaned
FAULT_ENV = "INFERCMP_TEST_FAULT"  # read by the test plugin below, inside the worker

EVIL_MODEL = "../../evil<script>alert(1)</script>"
EVIL_INPUT = "../../in\x00put\n<script>alert(2)</script>"
EVIL_OUTPUT = "..\\..\\out/</script><img src=x onerror=alert(3)>"

# The test-only plugin package. `rel-faulty` injects the fault named in $INFERCMP_TEST_FAULT
# into PyTorch (load or forward). Tests set the variable only after the parent has computed
# the reference outputs, and run ONNX Runtime (which never calls PyTorch) first, so the
# fault hits the pytorch worker alone while earlier combinations finish.
PLUGIN_SOURCE = '''
"""Test-only model plugins for tests/test_reliability*.py."""

import os
import sys
import time

from infercmp.workload.config import parse_config
from infercmp.workload.plugins import ModelPlugin

ALLOC_BYTES = 64 * 2**30  # far beyond the address-space limit the OOM test sets


def _config(name, input_name, output_name):
    return parse_config(
        {
            "name": name,
            "inputs": [
                {
                    "name": input_name,
                    "dtype_str": "float32",
                    "shapes": {
                        "dims_names": ["batch", "features"],
                        "example": [2, 4],
                        "runtime": [-1, 4],
                        "optimization": {"min": [1, 4], "opt": [2, 4], "max": [8, 4]},
                    },
                }
            ],
            "outputs": [
                {"name": output_name, "shape": {"runtime": [-1, 3], "dims_names": ["b", "c"]}}
            ],
        },
        name,
    )


def _module():
    import torch

    class Faulty(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            fault = os.environ.get("INFERCMP_TEST_FAULT", "")
            if fault == "run-slow":
                time.sleep(0.2)
            if fault == "run-raise":
                raise RuntimeError("injected fault in forward")
            if fault == "run-alloc":
                torch.empty(ALLOC_BYTES, dtype=torch.uint8)
            return self.linear(x)

    return Faulty().eval()


class Faulty(ModelPlugin):
    name = "rel-faulty"

    def load_config(self):
        return _config("rel-faulty", "x", "y")

    def load_pytorch_module(self):
        fault = os.environ.get("INFERCMP_TEST_FAULT", "")
        if fault == "load-raise":
            raise RuntimeError("injected fault in load")
        if fault == "load-hang":
            time.sleep(3600)
        in_worker = sys.argv[0].endswith(os.path.join("infercmp", "worker", "__main__.py"))
        if fault == "load-child" and in_worker:  # a process of the model's own
            import subprocess

            child = subprocess.Popen(["sleep", "600"])
            open(os.environ["INFERCMP_TEST_FAULT_MARK"], "w").write(str(child.pid))
            os.environ["INFERCMP_TEST_FAULT"] = "run-slow"
        if fault == "load-slow":  # in the parent, while bench prepares (reference, export)
            open(os.environ["INFERCMP_TEST_FAULT_MARK"], "w").close()
            time.sleep(60)
        return _module()


class Evil(ModelPlugin):
    name = EVIL_MODEL

    def load_config(self):
        return _config(EVIL_MODEL, EVIL_INPUT, EVIL_OUTPUT)

    def load_pytorch_module(self):
        return _module()
'''


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """A directory holding the test plugin package and its dist-info (entry points)."""
    site = tmp_path_factory.mktemp("reliability-site")
    header = (
        f"EVIL_MODEL = {EVIL_MODEL!r}\nEVIL_INPUT = {EVIL_INPUT!r}\nEVIL_OUTPUT = {EVIL_OUTPUT!r}\n"
    )
    (site / "infercmp_reliability_plugins.py").write_text(header + PLUGIN_SOURCE)
    info = site / "infercmp_reliability_plugins-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: infercmp-reliability-plugins\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [infercmp.models]
            rel-faulty = infercmp_reliability_plugins:Faulty
            {EVIL_MODEL} = infercmp_reliability_plugins:Evil
            """
        )
    )
    return site


@pytest.fixture
def reliability_plugins(plugin_site, monkeypatch) -> Path:
    """Make the test plugins visible here and in every subprocess (workers included)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(plugin_site) + (os.pathsep + path if path else ""))
    return plugin_site


@pytest.fixture
def isolated(tmp_path, monkeypatch, shared_cache):
    """Private TMPDIR (here and in subprocesses), the shared cache, and a marker on workers."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARKER_ENV, mark)
    return Isolation(tmp, mark, shared_cache.root)


class Isolation:
    def __init__(self, tmp: Path, mark: str, cache_root: Path) -> None:
        self.tmp = tmp
        self.mark = mark
        self.cache_root = cache_root

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **extra}

    def workers(self) -> list[psutil.Process]:
        """Worker processes started by this test, wherever they were reparented."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "infercmp.worker" not in " ".join(proc.info["cmdline"] or []):
                    continue
                if proc.environ().get(MARKER_ENV) == self.mark:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def assert_nothing_left(self, *runs: Path, cache_root: Path | None = None) -> None:
        """No worker, no temporary dir or file, no staging entry, no half-written file."""
        alive = self.workers()
        assert not alive, f"workers left running: {[p.pid for p in alive]}"
        # infercmp's own temporary dirs are "infercmp-*", Python's unnamed ones "tmp*"; torch's
        # persistent caches (torchinductor_<user>, .ses) are not temporary files of a run.
        leftovers = sorted(
            p.name for p in self.tmp.iterdir() if p.name.startswith(("infercmp", "tmp"))
        )
        assert not leftovers, f"temporary files left in TMPDIR: {leftovers}"
        staging = (cache_root or self.cache_root) / "staging"
        if staging.is_dir():
            assert not list(staging.iterdir()), "the cache's staging dir is not empty"
        for run in runs:
            partial = [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
            assert not partial, f"half-written files in {run}: {partial}"


def assert_report_renders(run: Path, where: Path) -> str:
    """`infercmp report RUN` writes an HTML page; returns it."""
    target = where / f"report-{uuid.uuid4().hex[:8]}.html"
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(target)])
    assert result.exit_code == 0, result.output
    page = target.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    return page


# --------------------------------------------------------------------------- untrusted text


def test_plugin_chosen_names_cannot_escape_the_run_dir_or_script_the_report(
    reliability_plugins, isolated, tmp_path
):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            EVIL_MODEL,
            "-e",
            "pytorch",
            "-e",
            "onnxruntime",
            "-d",
            "cpu",
            *FAST,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    run = only_run(out)
    # Every file the run wrote lies inside its own directory, with a safe name.
    assert run.parent == out
    assert re.fullmatch(r"[A-Za-z0-9._-]+", run.name)
    for path in run.rglob("*"):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name), path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tmpdir"]
    store = RunStore.open(run)
    assert store.model == EVIL_MODEL
    results = store.results
    assert {r.status for r in results} == {"ok"}, [r.error for r in results]
    assert all(EVIL_INPUT in r.runtime_shapes for r in results)
    assert all(r.parity["outputs"][0]["name"] == EVIL_OUTPUT for r in results)

    page = assert_report_renders(run, tmp_path)
    for payload in ("<script>alert(", "<img src=x", "</script><img"):
        assert payload not in page
    isolated.assert_nothing_left(run)


@pytest.mark.parametrize(
    "name",
    ["../../x", "/etc/passwd", "a/../../b", "..", ".", ".hidden", "a\x00b", "a\nb", "", "é" * 300],
)
def test_a_run_directory_name_never_leaves_the_results_root(tmp_path, name):
    store = RunStore.create(tmp_path / "out", name, {})
    assert store.path.parent == tmp_path / "out"
    assert re.fullmatch(r"[0-9]{8}-[0-9]{6}-[A-Za-z0-9._-]+", store.path.name)
    assert RunStore.open(store.path).model == name


@pytest.mark.parametrize(
    "parts",
    [
        ("pytorch", "cpu", "fp32", "../../../etc/passwd"),
        ("onnxruntime", "cpu", "fp32", "1x2", "path=/tmp/../../x"),
        ("a\x00b", "cpu\n", "fp32", ".."),
        ("x" * 500, "cpu", "fp32", "1"),
    ],
)
def test_a_combination_id_is_one_safe_file_name(parts):
    from infercmp.store.ids import combo_id

    cid = combo_id(*parts)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,119}", cid)
    assert combo_id(*parts) == cid  # stable


# --------------------------------------------------------------------------- safe loading


def _calls(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                yield f"{func.value.id}.{func.attr}", node
            elif isinstance(func, ast.Name):
                yield func.id, node


def _keyword(node, name):
    import ast

    for kw in node.keywords:
        if kw.arg == name:
            return ast.literal_eval(kw.value) if isinstance(kw.value, ast.Constant) else kw.value
    return None


def test_nothing_is_unpickled_or_loaded_unsafely_anywhere_in_the_code():
    """np.load(allow_pickle=False), torch.load(weights_only=True), safe YAML; no pickle, eval."""
    import ast

    import yaml

    from infercmp.workload import config

    problems = []
    sources = sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "examples").rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("pickle", "cPickle", "dill", "shelve", "marshal")
                    for n in names
                ):
                    problems.append(f"{where}:{node.lineno}: imports a pickle module")
        for name, node in _calls(tree):
            line = f"{where}:{node.lineno}"
            if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
                problems.append(f"{line}: np.load without allow_pickle=False")
            if name == "torch.load" and _keyword(node, "weights_only") is not True:
                problems.append(f"{line}: torch.load without weights_only=True")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                problems.append(f"{line}: {name}")
            if name == "yaml.load":
                loader = _keyword(node, "Loader")
                loader_name = getattr(loader, "id", None) or getattr(loader, "attr", None)
                cls = getattr(config, loader_name or "", None) or getattr(
                    yaml, loader_name or "", None
                )
                if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                    problems.append(f"{line}: yaml.load with loader {loader_name}")
            if name in ("eval", "exec"):
                problems.append(f"{line}: {name}()")
    assert not problems, "\n".join(problems)


def test_a_python_tag_in_a_model_config_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "model.yaml"
    config.write_text(f'name: !!python/object/apply:os.mkdir ["{marker}"]\ninputs: []\n')
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "python/object/apply:os.mkdir" in result.output
    assert not marker.exists()


def test_the_worker_refuses_a_pickled_reference_file(tmp_path):
    """A reference npz holding a pickled object is refused by the worker, never unpickled."""
    import subprocess
    import sys

    import numpy as np

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    reference = tmp_path / "reference.npz"
    np.savez(reference, input_0=np.array([Payload()], dtype=object), output_0=np.zeros(3))
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "model": "tiny-cnn",
                "engine": "pytorch",
                "device": "cpu",
                "reference": str(reference),
                "input_names": ["image"],
                "output_names": ["logits"],
                "measurement": {"iters": 5},
                "result_dir": str(tmp_path / "result"),
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "infercmp.worker", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads((tmp_path / "result" / "result.json").read_text())
    assert proc.returncode == 1, proc.stderr
    assert result["status"] == "failed" and result["phase"] == "load"
    assert "allow_pickle=False" in result["error"]
    assert not marker.exists()
