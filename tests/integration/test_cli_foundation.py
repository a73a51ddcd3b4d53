"""The foundation commands: models, config show/validate, --version, errors, and lazy imports."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from infercmp import ModelPlugin, __version__
from infercmp.cli import app
from infercmp.cli.options import console, err_console
from infercmp.core.errors import InfercmpError
from infercmp.workload.config import parse_config
from infercmp.workload.plugins import ENTRY_POINT_GROUP

REPO = Path(__file__).resolve().parents[2]
RESNET50_CONFIG = REPO / "examples/models/resnet50/src/infercmp_resnet50/config.yaml"
HEAVY = {"torch", "torchvision", "onnxruntime", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"}
# Not needed to print help; importing them would cost startup time on every invocation.
SCHEMA = {"numpy", "pydantic", "yaml"}


@pytest.fixture
def runner(monkeypatch):
    # The rich consoles are created at import; pin their width so tables do not depend on the
    # terminal the tests run in.
    monkeypatch.setattr(console, "width", 100)
    monkeypatch.setattr(err_console, "width", 100)
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "100"})


def invoke(runner, *args):
    return runner.invoke(app, list(args))


def _config(name: str, dtype: str = "float32") -> dict:
    return {
        "name": name,
        "inputs": [
            {
                "name": "x",
                "dtype_str": dtype,
                "shapes": {
                    "dims_names": ["batch", "n"],
                    "example": [2, 4],
                    "runtime": [-1, 4],
                    "optimization": {"min": [1, 4], "opt": [2, 4], "max": [8, 4]},
                },
            }
        ],
        "outputs": [{"name": "y", "shape": {"runtime": [-1, 2], "dims_names": ["batch", "k"]}}],
    }


class Alpha(ModelPlugin):
    name = "alpha"

    def load_config(self):
        return parse_config(_config("alpha"), "Alpha")


class FakeEntryPoint(SimpleNamespace):
    def load(self):
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


@pytest.fixture
def two_models(monkeypatch):
    """One working model and one whose import fails, in place of the installed ones."""
    eps = [
        FakeEntryPoint(
            name="alpha",
            value="alpha_pkg:Alpha",
            dist=SimpleNamespace(name="alpha-pkg"),
            target=Alpha,
        ),
        FakeEntryPoint(
            name="broken",
            value="broken_pkg:Broken",
            dist=SimpleNamespace(name="broken-pkg"),
            target=ImportError("No module named '[weird]'"),
        ),
    ]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: eps if group == ENTRY_POINT_GROUP else []
    )


# --- commands -------------------------------------------------------------------------------


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"infercmp {__version__}\n"


def test_help_lists_the_commands(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("models", "config", "--version", "--debug"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bench", "tiny-cnn", "--iters", "abc"], "Invalid value for '--iters'"),
        (["bench", "tiny-cnn", "--itres", "5"], "No such option: --itres"),
        (["bench"], "Missing argument 'model'"),
        (["benchh"], "No such command 'benchh'"),
    ],
)
def test_parse_errors_are_one_line_and_exit_2(runner, args, says):
    """Click's own parse errors read like infercmp's: one line, what to do, exit 2."""
    result = invoke(runner, *args)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and says in line, line
    assert "--help" in line  # where to look next


def test_no_arguments_shows_help(runner):
    result = invoke(runner)
    assert "Usage" in result.stdout + result.stderr


def test_models_table(runner, two_models):
    result = invoke(runner, "models")
    assert result.exit_code == 0, result.output
    assert result.stdout == textwrap.dedent(
        """\
        ┏━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━┓
        ┃ model  ┃ package    ┃ inputs                                              ┃ outputs ┃
        ┡━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━┩
        │ alpha  │ alpha-pkg  │ x:float32[?,4]                                      │ y[?,2]  │
        │ broken │ broken-pkg │ unavailable: ImportError: No module named '[weird]' │         │
        └────────┴────────────┴─────────────────────────────────────────────────────┴─────────┘
        """
    )


def test_models_json(runner, two_models):
    result = invoke(runner, "models", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "name": "alpha",
            "package": "alpha-pkg",
            "available": True,
            "inputs": "x:float32[?,4]",
            "outputs": "y[?,2]",
        },
        {
            "name": "broken",
            "package": "broken-pkg",
            "available": False,
            "error": "ImportError: No module named '[weird]'",
        },
    ]


def test_models_lists_the_builtin_models(runner):
    result = invoke(runner, "models", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["tiny-cnn"]["inputs"] == "image:float32[1,3,?,?]"
    assert rows["tiny-two-io"]["inputs"] == "features:float32[?,16], token_ids:int64[?,8]"
    assert rows["tiny-two-io"]["outputs"] == "score[?,1], embedding[?,8]"
    assert rows["tiny-encoder"]["available"]


def test_config_show_prints_valid_yaml(runner, tmp_path):
    result = invoke(runner, "config", "show", "tiny-cnn")
    assert result.exit_code == 0, result.output
    assert "    runtime: [1, 3, -1, -1]\n" in result.stdout
    data = yaml.safe_load(result.stdout)
    assert data == yaml.safe_load((REPO / "src/infercmp/models/tiny_cnn.yaml").read_text())
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    assert invoke(runner, "config", "validate", str(shown)).exit_code == 0


def test_config_show_unavailable_model(runner, two_models):
    result = invoke(runner, "config", "show", "broken")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: model 'broken' from package 'broken-pkg' is unavailable: ImportError: "
        "No module named '[weird]'\n"
    )


def test_config_validate_ok(runner):
    result = invoke(runner, "config", "validate", str(RESNET50_CONFIG))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok {RESNET50_CONFIG}\n"


def test_config_validate_reports_every_problem_of_every_file(runner, tmp_path):
    bad = yaml.safe_load(RESNET50_CONFIG.read_text())
    bad["inputs"][0]["dtype_str"] = "float"
    bad["outputs"][0]["shape"]["runtime"] = [1, 0]
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(yaml.safe_dump(bad))
    broken_file = tmp_path / "broken.yaml"
    broken_file.write_text("name: x\ninputs: [\n")
    result = invoke(
        runner, "config", "validate", str(bad_file), str(RESNET50_CONFIG), str(broken_file)
    )
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == f"ok {RESNET50_CONFIG}\n"
    assert result.stderr.splitlines() == [
        f"error: {bad_file}: inputs[0] ('image').dtype_str: unknown dtype 'float'; use one of "
        "bool, uint8, int8, int16, int32, int64, float16, float32, float64",
        f"error: {bad_file}: outputs[0] ('probs').shape.runtime[1]: is 0; each dimension must "
        "be -1 (dynamic) or a positive size",
        f"error: {broken_file}: YAML syntax error at line 3, column 1: expected the node "
        "content, but found '<stream end>'",
    ]
    assert "Traceback" not in result.output


def test_config_validate_missing_file(runner, tmp_path):
    result = invoke(runner, "config", "validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_unknown_model_is_one_line_exit_2(runner):
    result = invoke(runner, "config", "show", "tiny-cn")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown model 'tiny-cn'; did you mean 'tiny-cnn', ")
    assert "Traceback" not in result.output


def test_debug_lets_the_exception_through(runner):
    result = invoke(runner, "--debug", "config", "show", "tiny-cn")
    assert isinstance(result.exception, InfercmpError)
    assert "unknown model 'tiny-cn'" in str(result.exception)


# --- real processes -------------------------------------------------------------------------

MAIN = "import sys; sys.argv[0] = 'infercmp'; from infercmp.cli import main; main()"


def run(*args: str, code: str = MAIN, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, NO_COLOR="1", COLUMNS="100", **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_process_user_error_is_one_line_without_traceback():
    result = run("config", "show", "no-such-model")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: unknown model 'no-such-model'")


def test_process_debug_shows_the_traceback():
    result = run("--debug", "config", "show", "no-such-model")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "infercmp.core.errors.InfercmpError: unknown model 'no-such-model'" in result.stderr


def test_process_version():
    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"infercmp {__version__}\n")


def _imported_after(args: list[str], prefix: str = "") -> set[str]:
    code = prefix + textwrap.dedent(
        f"""
        import json, sys
        sys.argv = ['infercmp', *{args!r}]
        from infercmp.cli import main
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))
        """
    )
    result = run(code=code)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [["--help"], ["models"], ["models", "--json"]])
def test_help_and_models_do_not_import_heavy_modules(args):
    assert _imported_after(args) & HEAVY == set()


def test_help_does_not_load_the_config_schema():
    assert _imported_after(["--help"]) & SCHEMA == set()


BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        # Behaves like an environment where torch was never installed.
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {'torch', 'torchvision'}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)


@pytest.mark.parametrize("args", [["--help"], ["models", "--json"], ["--version"]])
def test_cli_works_without_torch(args):
    assert "torch" not in _imported_after(args, prefix=BLOCK_TORCH)


def test_without_torch_config_validate_works():
    code = BLOCK_TORCH + MAIN
    result = run("config", "validate", str(RESNET50_CONFIG), code=code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok {RESNET50_CONFIG}\n"


def test_the_block_really_blocks_torch():
    result = run(code=BLOCK_TORCH + "import torch")
    assert result.returncode == 1 and "No module named 'torch'" in result.stderr


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_out_dir_that_cannot_be_made_is_bad_input_exit_2(runner, tmp_path, where):
    """Bad input is exit 2 (docs/reliability.md); a disk failing mid-run is exit 1."""
    blocker = tmp_path / "taken"
    blocker.write_text("")
    out = blocker if where == "a file" else blocker / "runs"
    result = invoke(
        runner, "bench", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "--iters", "5",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot create the results directory {out}: ")
    assert blocker.read_text() == ""


NINES = "9" * 5000


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--batch", "²"], "error: --batch '²': '²' is not a positive integer"),
        (["--concurrency", "²"], "error: --concurrency '²': '²' is not a positive integer"),
        (["--batch", NINES], "error: --batch: a size of 5000 digits is too large"),
        (["--concurrency", NINES], f"error: --concurrency '{NINES[:40]}': {NINES[:40]} is above"),
        (["--timeout", "1e10"], "error: --timeout must be more than 0 and at most 86400 seconds"),
        (["--out", "runs\udcff"], "error: Invalid value for '--out' / '-o': 'runs\\xff' is not va"),
    ],
)
def test_bench_values_it_cannot_use_are_one_line_before_any_run_directory(
    runner, tmp_path, monkeypatch, args, says
):
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "bench", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(says)
    assert list(tmp_path.iterdir()) == []


def test_report_says_a_file_is_not_a_run_directory(runner, tmp_path):
    page = tmp_path / "x.html"
    page.write_text("<html></html>")
    result = invoke(runner, "report", str(page))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: '{page}' is a file, not a run directory; pass a directory")


def test_report_refuses_a_suffix_it_cannot_write(runner, tmp_path):
    from synthetic_runs import Combo, make_run

    run = make_run(tmp_path / "runs", [Combo("onnxruntime")])
    result = invoke(runner, "report", str(run), "-o", str(tmp_path / "out.pdf"))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"error: -o {tmp_path / 'out.pdf'}: infercmp writes no '.pdf' file; name it .html, .md, "
        ".csv or .json, or give --format"
    )
    assert not (tmp_path / "out.pdf").exists()
