"""Bad input, fuzzed through the real CLI: success, or one clear line and exit code 2.

Never a traceback, never a half-written file: a rejected `bench` leaves no run directory and a
rejected `report` no report file. Workers are replaced by a stub that checks the spec the
worker would be given (so a bench that passes the CLI's checks cannot fail on its own spec),
and CUDA is hidden so the GPU combinations are skipped the same way on every machine.
The number of cases that ran is printed at the end of the session (and kept in pytest's
cache under `infercmp/reliability-fuzz-cases`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from config_strategies import invalid_configs, valid_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_runs import Combo, make_run
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.core.contract import WorkerSpec
from infercmp.platform import gpus as devices
from infercmp.run import worker_process
from infercmp.run.worker_process import WorkerOutcome
from infercmp.store.run_store import RunStore

FUZZ_CASES: Counter[str] = Counter()
FUZZ = settings(
    max_examples=int(os.environ.get("INFERCMP_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def fuzz_case_count(request):
    """Say how many fuzz cases ran, for the issue's closing note."""
    yield
    total = sum(FUZZ_CASES.values())
    parts = ", ".join(f"{name} {count}" for name, count in sorted(FUZZ_CASES.items()))
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        cache.set("infercmp/reliability-fuzz-cases", dict(FUZZ_CASES, total=total))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nreliability fuzz cases: {total} ({parts})")


def _stub_worker(spec, timeout_s, sample_hz, samplers, on_phase=lambda phase: None):
    """Validate the spec as the worker would (a bad one raises: a traceback the test sees)."""
    WorkerSpec.model_validate_json(spec.model_dump_json())
    return WorkerOutcome("skipped", "input fuzz: worker not started", None, {}, [], "")


@pytest.fixture
def cli(monkeypatch, shared_cache, tmp_path):
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(worker_process, "run_worker", _stub_worker)
    return tmp_path


def _runs(out: Path) -> set[Path]:
    return {p for p in out.iterdir() if p.is_dir()} if out.is_dir() else set()


def check(result, out: Path | None = None, before: frozenset = frozenset(), lines: int = 1):
    """Success (exit 3: nothing could run here, as `-d cuda` without a GPU), or exit 2 with one
    `error:` line: never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.exception!r}\n{result.output}"
    )
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2, 3), result.output
    new = _runs(out) - before if out is not None else set()
    if result.exit_code in (0, 3):
        if out is not None:
            (run,) = new
            assert RunStore.open(run).status == "complete"
        return
    assert not new, f"rejected input left a run directory: {new}"
    # infercmp's own checks and click's parse errors alike: `error:` lines and nothing else.
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert 1 <= len(errors) <= lines, result.output
    assert len(" ".join(errors)) > len("error: ") + 10  # says something


def _allowed_lines(text: str) -> int:
    """Messages quote the input up to a few times; each line break in it adds a line."""
    return 1 + 4 * (len(f"<{text}>".splitlines()) - 1)


def _bench(out: Path, *args: str):
    before = frozenset(_runs(out))
    result = runner.invoke(app, ["bench", *args, "--out", str(out), "--warmup", "5"])
    check(result, out, before, lines=_allowed_lines(" ".join(args)))
    return result


# --------------------------------------------------------------------------- --shape

small_dim = st.integers(1, 40)
odd_dim = st.one_of(
    st.integers(-3, 0),
    st.integers(10**9, 10**40),
    st.sampled_from(["", " ", "x", "1.5", "0x10", "+3", "-0", "1e3", "nan", "٣", "9" * 5000]),
)
dim = st.one_of(small_dim.map(str), small_dim.map(str), odd_dim.map(str))
dims = st.lists(dim, min_size=0, max_size=5).map(",".join)
named = st.tuples(st.sampled_from(["image", "features", "token_ids", "nope", ""]), dims).map(
    "=".join
)
literal = st.lists(
    st.lists(st.one_of(small_dim, odd_dim.filter(lambda d: isinstance(d, int))), max_size=4).map(
        tuple
    ),
    max_size=3,
).map(repr)
shapes = st.one_of(
    st.lists(dims, min_size=1, max_size=3).map(";".join),
    st.lists(named, min_size=1, max_size=3).map(";".join),
    literal,
    st.text(max_size=30),
    st.sampled_from(["[" * 300, "[(1,2,3)", "[True, 2, 3]", "[[1,2,3]]", "[(32,32,3)]"]),
)


@FUZZ
@given(model=st.sampled_from(["tiny-cnn", "tiny-two-io"]), shape=shapes)
def test_fuzzed_shapes(cli, model, shape):
    FUZZ_CASES["--shape"] += 1
    _bench(cli / "out", model, "-s", shape, "-d", "cuda")


def test_a_shape_too_large_for_memory_is_refused_before_any_work(cli):
    result = _bench(cli / "out", "tiny-cnn", "-s", "100000,100000,3", "-d", "cpu")
    assert result.exit_code == 2
    assert "30,000,000,000 elements" in result.output


# --------------------------------------------------------------------------- counts

number = st.one_of(
    st.integers(-5, 200).map(str),
    st.integers(10**12, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=1e-320, max_value=1e-3).map(repr),
    st.sampled_from(["", "0", "-0", "0.0", "1e309", "-1e309", "nan", "inf", "0x10", "1_000"]),
    st.text(max_size=8),
)
warmup = st.one_of(number, number.map(lambda n: n + "s"), st.sampled_from(["5", "0.5s", "s"]))
COUNT_OPTIONS = {
    "--iters": number,
    "--duration": number,
    "--warmup": warmup,
    "--sample-hz": number,
    "--timeout": number,
    "--min-iters": number,
    "--max-seconds": number,
    "--min-seconds": number,
    "--ci-target": number,
    "--repeat": number,
}


@FUZZ
@given(
    chosen=st.lists(st.sampled_from(sorted(COUNT_OPTIONS)), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_fuzzed_counts(cli, chosen, data):
    FUZZ_CASES["counts"] += 1
    args = []
    for option in chosen:
        args += [option, data.draw(COUNT_OPTIONS[option], label=option)]
    # Counts reach the worker's spec on a CPU combination (the stub validates it).
    out = cli / "out"
    before = frozenset(_runs(out))
    result = runner.invoke(
        app, ["bench", "tiny-cnn", "-e", "onnxruntime", "-d", "cpu", *args, "--out", str(out)]
    )
    check(result, out, before)


# --------------------------------------------------------------------------- names

option_key = st.one_of(
    st.sampled_from(["intra_op_threads", "channels_last", "cuda_graph", "bogus"]),
    st.text(max_size=6),
)
option_value = st.one_of(
    st.sampled_from(["1", "true", "none", "1e999", "nan", "'x'", "-1", "a/../b"]),
    st.text(max_size=6),
)
engine_name = st.one_of(
    st.sampled_from(["pytorch", "onnxruntime", "tensorrt"]),
    st.sampled_from(["PyTorch", "torch", "trt", "onnx", "", " pytorch ", "pytorch[", "[x=1]"]),
    st.text(max_size=10),
)
engine = st.one_of(
    engine_name,
    st.tuples(
        engine_name,
        st.lists(st.tuples(option_key, option_value).map("=".join), max_size=3).map(",".join),
        st.sampled_from(["]", "", "]]", "] "]),
    ).map(lambda t: f"{t[0]}[{t[1]}{t[2]}"),
)
device = st.one_of(
    st.sampled_from(["cpu", "cuda", "CPU", "gpu", "cuda:0", ""]), st.text(max_size=5)
)
precision = st.one_of(
    st.sampled_from(["fp32", "fp16", "bf16", "int8", "FP32", "float32", ""]), st.text(max_size=5)
)


@FUZZ
@given(
    engines=st.lists(engine, max_size=2),
    devices_=st.lists(device, min_size=1, max_size=2),
    precisions=st.lists(precision, max_size=2),
)
def test_fuzzed_engine_device_precision_names(cli, engines, devices_, precisions):
    FUZZ_CASES["engine/device/precision"] += 1
    args = []
    for flag, values in (("-e", engines), ("-d", devices_), ("-p", precisions)):
        for value in values:
            args += [flag, value]
    # A line break inside a name is printed as such (see docs/reliability.md).
    out = cli / "out"
    before = frozenset(_runs(out))
    result = runner.invoke(app, ["bench", "tiny-two-io", *args, "--out", str(out)])
    check(result, out, before, lines=_allowed_lines(" ".join(args)))


def test_an_option_the_engine_does_not_know_is_refused_before_anything_runs(
    shared_cache, monkeypatch, tmp_path
):
    """The engine's descriptor checks options while planning: one line, exit 2, no run."""
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["bench", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime[bogus=1]", *FAST_ARGS,
              "--out", str(out)],
    )  # fmt: skip
    check(result, out)
    assert result.exit_code == 2
    assert "error: engine 'onnxruntime': no option 'bogus' (known options: " in result.output
    assert not _runs(out)


@pytest.mark.parametrize("value", ["1e999", "nan", "-inf"])
def test_a_non_finite_option_value_is_bad_input(tmp_path, value):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "bench",
            "tiny-cnn",
            "-d",
            "cpu",
            "-e",
            f"onnxruntime[intra_op_threads={value}]",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2, result.output
    assert f"engine option value '{value}' is not a finite number" in result.output
    assert not out.exists()


FAST_ARGS = ["--warmup", "5", "--iters", "10"]


# --------------------------------------------------------------------------- model configs


@FUZZ
@given(data=st.one_of(valid_configs(), invalid_configs()))
def test_fuzzed_model_configs_through_config_validate(tmp_path_factory, data):
    FUZZ_CASES["model config"] += 1
    path = tmp_path_factory.mktemp("config") / "model.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(path)])
    check(result, lines=50)


@FUZZ
@given(text=st.text(max_size=200))
def test_fuzzed_yaml_text_through_config_validate(tmp_path_factory, text):
    FUZZ_CASES["config text"] += 1
    path = tmp_path_factory.mktemp("config") / "model.yaml"
    path.write_text(text, encoding="utf-8")
    check(runner.invoke(app, ["config", "validate", str(path)]), lines=50)


class _ConfiguredPlugin:
    """A plugin whose config each example sets; registered through a fake entry point."""

    data: object = None


def _small_examples(data: dict) -> dict:
    """Cap example dims at 8: the bench builds the example arrays, and 1024^4 of them is slow."""
    for spec in data.get("inputs", []):
        shapes = spec.get("shapes", {})
        shapes["example"] = [min(d, 8) for d in shapes.get("example", [])]
    return data


@FUZZ
@given(data=st.one_of(valid_configs().map(_small_examples), invalid_configs()))
def test_fuzzed_plugin_configs_through_bench(cli, monkeypatch, data):
    """A plugin with a broken config is unavailable (one line); a valid one benches."""
    import importlib.metadata
    from types import SimpleNamespace

    from infercmp.workload.config import parse_config
    from infercmp.workload.plugins import ModelPlugin

    FUZZ_CASES["plugin config"] += 1

    class Configured(ModelPlugin):
        name = "fuzzed"

        def load_config(self):
            return parse_config(data, "fuzzed plugin")

    entry = SimpleNamespace(
        name="fuzzed",
        value="fuzzed:Configured",
        dist=SimpleNamespace(name="fuzz-dist"),
        load=lambda: Configured,
    )
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [entry])
    before = frozenset(_runs(cli / "out"))
    result = runner.invoke(app, ["bench", "fuzzed", "-d", "cuda", "--out", str(cli / "out")])
    check(result, cli / "out", before, lines=50)


# --------------------------------------------------------------------------- run directories


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("good-runs")
    base = make_run(root, [Combo("pytorch"), Combo("onnxruntime", median_ms=5.0)], model="m")
    new = make_run(root, [Combo("pytorch", median_ms=9.0), Combo("onnxruntime")], model="m")
    return base, new


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
RUN_FILES = ["run.json", "results.jsonl", "latency", "samples"]


@st.composite
def damage(draw):
    target = draw(st.sampled_from(RUN_FILES))
    action = draw(
        st.sampled_from(
            ["delete", "truncate", "garbage", "json", "edit-key", "edit-item", "dir", "empty"]
        )
    )
    return target, action, draw(st.data())


def _damage(run: Path, target: str, action: str, data) -> None:
    path = run / target
    if path.is_dir():  # one combination's parquet file
        files = sorted(path.glob("*.parquet"))
        if not files:
            return
        path = files[0]
    if action == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif action == "truncate" and path.is_file():
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="cut")])
    elif action == "garbage" and path.is_file():
        path.write_bytes(data.draw(st.binary(max_size=64), label="bytes"))
    elif action == "json" and path.is_file():
        path.write_text(json.dumps(data.draw(json_values, label="json")))
    elif action == "dir" and path.is_file():
        path.unlink()
        path.mkdir()
    elif action == "empty" and path.is_file():
        path.write_bytes(b"")
    elif action in ("edit-key", "edit-item") and path.suffix == ".jsonl":
        first, *rest = path.read_text().splitlines()
        item = json.loads(first)
        key = data.draw(st.sampled_from(sorted(item)), label="key")
        item[key] = data.draw(json_values, label="value")
        lines = [json.dumps(item), *rest] + ([json.dumps(item)] if action == "edit-item" else [])
        path.write_text("\n".join(lines) + "\n")
    elif action in ("edit-key", "edit-item") and path.suffix == ".json":
        value = json.loads(path.read_text())
        item = value[0] if isinstance(value, list) and value else value
        if isinstance(item, dict) and item:
            key = data.draw(st.sampled_from(sorted(item)), label="key")
            item[key] = data.draw(json_values, label="value")
            if action == "edit-item" and isinstance(value, list):
                value.append(item)
        path.write_text(json.dumps(value))


@FUZZ
@given(hurt=damage(), command=st.sampled_from(["html", "md", "csv", "json", "compare"]))
def test_fuzzed_run_directories_for_report_and_compare(good_runs, tmp_path_factory, hurt, command):
    FUZZ_CASES["run directory"] += 1
    base, new = good_runs
    work = tmp_path_factory.mktemp("damaged")
    run = Path(shutil.copytree(new, work / new.name))
    _damage(run, *hurt)
    target = work / f"report.{command}"
    if command == "compare":
        result = runner.invoke(app, ["compare", str(base), str(run), "--resamples", "200"])
        assert result.exit_code != 1 or "regress" in result.output.lower(), result.output
        assert result.exit_code != 3 or "FAIL (exit 3)" in result.output, result.output
        if result.exit_code in (1, 3):
            return  # a regression, or a combination lost to the damage: documented exit codes
    else:
        result = runner.invoke(app, ["report", str(run), "-f", command, "-o", str(target)])
    check(result)
    if result.exit_code == 2:
        assert not target.exists(), "a rejected report left a file behind"
    elif command != "compare":
        assert target.stat().st_size > 0


@FUZZ
@given(
    path=st.one_of(
        st.text(max_size=20),
        st.sampled_from(["", ".", "..", "/", "/dev/null", "/proc/self", "a\x00b", "~", "-x"]),
    )
)
def test_fuzzed_run_directory_arguments(tmp_path_factory, path):
    """Arbitrary paths given to report and compare: a clear line, never a traceback."""
    FUZZ_CASES["run directory argument"] += 1
    where = tmp_path_factory.mktemp("cwd")
    target = where / "report.html"
    # A line break inside the path itself is printed as such (see docs/reliability.md).
    lines = _allowed_lines(path)
    with contextlib.chdir(where):  # a relative path lands here, not in the repository
        check(runner.invoke(app, ["report", "-o", str(target), "--", path]), lines=lines)
        check(runner.invoke(app, ["report", "--runs-dir", path, "-o", str(target)]), lines=lines)
        check(runner.invoke(app, ["compare", "--", path, path]), lines=lines)


def test_report_on_a_run_still_being_written_shows_what_is_committed(tmp_path):
    """A reader never sees a half-written combination: only whole lines of the log count."""
    run = make_run(tmp_path, [Combo("pytorch"), Combo("onnxruntime")], model="m")
    first, second = (run / "results.jsonl").read_text().splitlines()
    # The second line is being appended: half of it is there, its parquet files are complete.
    (run / "results.jsonl").write_text(first + "\n" + second[: len(second) // 2])
    committed = json.loads(first)["combo_id"]
    store = RunStore.open(run)
    assert [r.combo_id for r in store.results] == [committed]
    assert set(store.latency()["combo_id"].unique()) == {committed}
    assert set(store.samples()["combo_id"].unique()) == {committed}
    tempfile.mkstemp(dir=run / "latency", prefix=".x.parquet.", suffix=".tmp")  # a writer's
    result = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
