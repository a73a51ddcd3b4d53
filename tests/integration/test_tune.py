"""infercmp tune: the search over declared options (with a fake engine and a fake measurer whose
speed depends on the options), the budget, parity gating, interruption, and the CLI for real."""

from __future__ import annotations

import json
import os
import signal
from typing import Literal

import pytest
from pydantic import Field
from typer.testing import CliRunner

from infercmp.engines.descriptor import (
    EngineDescriptor,
    EngineOptions,
    Machine,
    SearchOption,
    SearchSpace,
)
from infercmp.engines.registry import get_descriptor
from infercmp.run.signals import Interrupted, stop_on_signals
from infercmp.store.tune_file import (
    TUNE_FILE,
    TuneLeaderboard,
    read_leaderboard,
    write_leaderboard,
)
from infercmp.tune.candidates import Candidate, cheap_candidates
from infercmp.tune.measure import Measured
from infercmp.tune.search import MIN_WORKER_S, Search, TuneRequest, pareto_front

# --- a fake engine whose speed depends on its options --------------------------------------------


class FakeOptions(EngineOptions):
    speed: Literal["slow", "fast", "fastest"] = Field("slow", description="how fast it runs")
    broken: bool = Field(False, description="the worker crashes")
    compile: bool = Field(False, description="halves the latency, costs 100 s to load")


class FakeDescriptor(EngineDescriptor):
    name = "fake"
    summary = "a fake engine for tune's tests"
    devices = ("cpu",)
    precisions = ("fp32", "bf16")
    options = FakeOptions
    runtime = "nowhere:Nothing"
    search_space = SearchSpace(
        options=(
            SearchOption("speed", {"cpu": ("fast", "fastest")}),
            SearchOption("broken", {"cpu": (True,)}),
            SearchOption("compile", {"cpu": (True,)}, cost_s={True: 100.0}),
        ),
        precisions={"cpu": ("fp32", "bf16")},
        rules=(
            lambda o, device, precision: (
                "fastest has no bf16 kernels"
                if o.get("speed") == "fastest" and precision == "bf16"
                else None
            ),
        ),
    )


class PlainDescriptor(EngineDescriptor):
    """A third-party engine without a search space: its defaults only."""

    name = "plain"
    summary = "no declaration"
    devices = ("cpu",)
    runtime = "nowhere:Nothing"


BASE_MS = {"slow": 10.0, "fast": 5.0, "fastest": 2.0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeMeasurer:
    """Measures in no time: latency from the options, wall time charged to a fake clock.

    bf16 runs at 0.15x and fails parity (the fastest candidates that must be dropped); each
    worker costs 5 s of overhead plus its windows, plus its declared load cost the first time.
    """

    def __init__(self, clock: FakeClock, interrupt_after: int | None = None) -> None:
        self.clock = clock
        self.interrupt_after = interrupt_after
        self.calls: list[tuple[str, str, float, float]] = []  # round, label, timeout, left
        self.left_s = lambda: 0.0  # the search's own, set once it exists
        self.loaded: set[Candidate] = set()

    def measure(self, candidates, plan, timeout_s):
        for c in candidates:
            seconds = 0.0
            for _ in range(plan.repeat):
                seconds = timeout_s(c)
                self.calls.append((plan.name, c.label, seconds, self.left_s()))
                if self.interrupt_after is not None and len(self.calls) > self.interrupt_after:
                    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, mid-measurement
                m = plan.measurement
                cost = c.cost_s if c not in self.loaded else 0.0  # a compile is cached after
                self.loaded.add(c)
                self.clock.now += min(
                    5.0 + cost + m.warmup_seconds + (m.duration_s or 2.0), seconds
                )
            options = dict(c.options)
            ms = BASE_MS[options.get("speed", "slow")]
            ms *= 0.5 if options.get("compile") else 1.0
            ms *= 0.15 if c.precision == "bf16" else 1.0
            if options.get("broken"):
                yield Measured(c, "crashed", "worker killed by SIGSEGV", wall_s=5.0)
                continue
            yield Measured(
                c,
                "ok",
                parity_ok=c.precision != "bf16",
                parity_text="output 'y': max abs 0.3 (atol 0.01)"
                if c.precision == "bf16"
                else None,
                p50_ms=ms,
                ci_low_ms=ms * 0.99,
                ci_high_ms=ms * 1.01,
                items_per_s=1000 / ms,
                memory_bytes=int(100e6 + (50e6 if options.get("compile") else 0)),
                processes=plan.repeat,
                wall_s=5.0 * plan.repeat,
                measure_s=0.0,
            )


def _search(budget_s: float, tmp_path, descriptors=None, interrupt_after=None, **request):
    clock = FakeClock()
    measurer = FakeMeasurer(clock, interrupt_after)
    saved: list[TuneLeaderboard] = []

    def save(board: TuneLeaderboard) -> None:
        write_leaderboard(tmp_path, board)
        saved.append(board)

    search = Search(
        TuneRequest(
            model="tiny-cnn",
            device="cpu",
            shape="32x32x3",
            shape_arg="32,32,3",
            descriptors=descriptors or {"fake": FakeDescriptor()},
            machine=Machine(cuda_devices=0),
            budget_s=budget_s,
            **request,
        ),
        measurer,
        save=save,
        clock=clock,
        started=0.0,
    )
    measurer.left_s = search.left_s
    return search, measurer, clock


def test_fake_engine_search_finds_the_fastest_passing_configuration(tmp_path):
    search, measurer, _ = _search(1000.0, tmp_path)
    board = search.run()
    assert board.status == "complete"
    (winner,) = board.winners
    # compile (expensive) on top of the best screened one: 2 ms x 0.5; bf16 is faster but fails
    assert winner.best == "fake[speed=fastest,compile=true] fp32"
    assert winner.best_p50_ms == pytest.approx(1.0)
    assert winner.default_p50_ms == pytest.approx(10.0)
    assert winner.speedup == pytest.approx(10.0)
    assert winner.round == "final"
    assert winner.command == (
        "infercmp bench tiny-cnn -e 'fake[speed=fastest,compile=true]' -d cpu -p fp32 "
        "--shape 32,32,3 --repeat 3"
    )
    # the final round measured the winner and the defaults with repeated processes
    finals = [(label, t) for r, label, t, _ in measurer.calls if r == "final"]
    assert sorted({label for label, _ in finals}) == ["fake fp32", winner.best]
    assert len(finals) == 6


def test_fake_engine_candidates_come_from_the_declaration_with_rules_applied():
    found, excluded = cheap_candidates(FakeDescriptor(), "cpu", Machine(cuda_devices=0), None)
    labels = [c.label for c in found]
    assert labels[0] == "fake fp32"  # the defaults first
    assert "fake[speed=fastest] bf16" not in labels
    assert {"label": "fake[speed=fastest] bf16", "reason": "fastest has no bf16 kernels"} in [
        {"label": e.label, "reason": e.reason} for e in excluded
    ]
    assert not any("compile" in label for label in labels)  # expensive: not screened blindly
    assert len(found) == 3 * 2 * 2 - 2  # speed x broken x precision, minus the rule's two


def test_fake_engine_parity_failure_drops_the_faster_candidate_with_the_reason(tmp_path):
    search, _, _ = _search(1000.0, tmp_path)
    board = search.run()
    bf16 = [e for e in board.entries if e.precision == "bf16" and not e.options.get("broken")]
    assert bf16 and all(e.status == "dropped" for e in bf16)
    assert all(e.reason == "parity: output 'y': max abs 0.3 (atol 0.01)" for e in bf16)
    assert min(e.p50_ms for e in bf16) < board.winners[0].best_p50_ms  # faster, still dropped
    crashed = [e for e in board.entries if e.options.get("broken")]
    assert all(e.reason == "crashed: worker killed by SIGSEGV" for e in crashed)
    assert board.pareto[0] == board.winners[0].best


def test_fake_engine_tiny_budget_stops_in_time_and_keeps_what_it_measured(tmp_path):
    search, measurer, clock = _search(30.0, tmp_path)
    board = search.run()
    assert board.status == "budget"
    assert board.elapsed_s <= board.budget_s
    # no worker was given more time than the budget had left
    assert all(timeout <= left for _, _, timeout, left in measurer.calls)
    assert all(left >= MIN_WORKER_S for _, _, _, left in measurer.calls)
    measured = [e for e in board.entries if e.round is not None]
    waiting = [e for e in board.entries if e.status == "not measured"]
    assert measured and waiting
    assert waiting[0].reason == "the budget ran out before its turn"
    assert board.winners[0].best == "fake fp32" or board.winners[0].best is not None
    on_disk = read_leaderboard(tmp_path)
    assert on_disk == board


def test_fake_engine_expensive_value_is_skipped_when_the_budget_cannot_hold_it(tmp_path):
    search, measurer, _ = _search(150.0, tmp_path)
    board = search.run()
    expensive = next(e for e in board.entries if e.options.get("compile"))
    assert expensive.status == "not measured"
    assert expensive.reason.startswith("needs about 106 s (declared load cost 100 s)")
    assert not any(r == "expensive" for r, *_ in measurer.calls)
    assert board.winners[0].best == "fake[speed=fastest] fp32"


def test_fake_engine_sigint_keeps_the_leaderboard_so_far(tmp_path):
    search, _, _ = _search(1000.0, tmp_path, interrupt_after=4)
    with pytest.raises(Interrupted), stop_on_signals():
        search.run()
    on_disk = json.loads((tmp_path / TUNE_FILE).read_text())
    assert on_disk["status"] == "interrupted"
    measured = [e for e in on_disk["entries"] if e["round"] == "screen"]
    assert len(measured) == 4
    assert on_disk["winners"][0]["best"] == "fake[speed=fast] fp32"  # the best of those four


def test_fake_engine_without_a_declaration_is_tuned_over_its_defaults(tmp_path):
    search, measurer, _ = _search(1000.0, tmp_path, descriptors={"plain": PlainDescriptor()})
    board = search.run()
    assert [e.command for e in board.entries] == [
        "infercmp bench tiny-cnn -e plain -d cpu -p fp32 --shape 32,32,3 --repeat 3"
    ]
    assert board.notes == [
        "plain declares no search space: tuned over its defaults and precisions only"
    ]


def test_fake_engine_throughput_objective_ranks_by_items_per_second(tmp_path):
    search, _, _ = _search(1000.0, tmp_path, objective="throughput")
    board = search.run()
    assert board.winners[0].best == "fake[speed=fastest,compile=true] fp32"
    assert board.entries[0].items_per_s == pytest.approx(1000.0)


class HugeOptions(EngineOptions):
    a0: int = Field(0, description="knob 0")
    a1: int = Field(0, description="knob 1")
    a2: int = Field(0, description="knob 2")
    a3: int = Field(0, description="knob 3")
    a4: int = Field(0, description="knob 4")
    a5: int = Field(0, description="knob 5")
    a6: int = Field(0, description="knob 6")
    a7: int = Field(0, description="knob 7")
    a8: int = Field(0, description="knob 8")


class HugeDescriptor(PlainDescriptor):
    """Nine options of ten values: 11**9 (about 2.4 billion) cheap mixes."""

    name = "huge"
    options = HugeOptions
    search_space = SearchSpace(
        options=tuple(SearchOption(f"a{i}", {"cpu": tuple(range(1, 11))}) for i in range(9))
    )


def test_a_huge_search_space_is_screened_in_the_budget_not_listed(tmp_path):
    import time

    assert HugeDescriptor.search_space.cheap_size("cpu") == 11**9
    search, measurer, _ = _search(10.0, tmp_path, descriptors={"huge": HugeDescriptor()})
    started = time.monotonic()
    board = search.run()
    assert time.monotonic() - started < 5.0
    # 10 s holds two workers: the defaults and the first one-option change, nothing listed more
    assert sorted(e.label for e in board.entries) == ["huge fp32", "huge[a0=1] fp32"]
    assert board.notes == [
        "huge declares about 2,357,947,691 cheap configurations; the 10 s budget has room for "
        "at most 2 workers, so the screen takes the first 2: the defaults, then those that "
        "change fewest options"
    ]
    grid = HugeDescriptor.search_space.cheap_grid("cpu", limit=12)
    assert grid[:3] == [{}, {"a0": 1}, {"a0": 2}]
    assert grid[11] == {"a1": 1}  # every single change before any pair


def test_fake_engine_search_where_every_candidate_is_dropped_fails(tmp_path):
    search, _, _ = _search(1000.0, tmp_path, precisions=["bf16"])  # bf16 fails parity
    board = search.run()
    assert board.status == "failed"
    assert board.detail == (
        "no configuration passed: all 4 measured were dropped (the leaderboard says why)"
    )
    assert read_leaderboard(tmp_path).status == "failed"


def test_pareto_front_keeps_what_no_other_point_beats_on_both():
    points = [("a", 1.0, 300), ("b", 2.0, 100), ("c", 3.0, 200), ("d", 1.5, None)]
    assert pareto_front(points) == ["a", "b"]


def test_built_in_engines_declare_their_search_space():
    pytorch = get_descriptor("pytorch").search_space
    assert ("compile", "max-autotune-no-cudagraphs", 240.0) in pytorch.expensive("cuda")
    assert {"cuda_graph": True, "channels_last": True} in pytorch.cheap_grid("cuda")
    assert all("cuda_graph" not in o for o in pytorch.cheap_grid("cpu"))
    ort = get_descriptor("onnxruntime")
    assert {"enable_cuda_graph": True} in ort.search_space.cheap_grid("cuda")
    assert get_descriptor("tensorrt").search_space.precisions["cuda"] == ("fp32", "fp16", "bf16")
    assert get_descriptor("openvino").search_space.cheap_grid("cuda") == [{}]
    found, _ = cheap_candidates(get_descriptor("pytorch"), "cuda", Machine(1), None)
    assert (
        Candidate("pytorch", "cuda", "fp16", (("channels_last", True), ("cuda_graph", True)))
        in found
    )
    # fp32 is not declared for CUDA, but the defaults are always measured (the speed-up's base)
    assert [c for c in found if c.precision == "fp32"] == [Candidate("pytorch", "cuda", "fp32")]
    assert len(found) == 1 + 2 * 4


# --- the CLI, for real, on the CPU -------------------------------------------------------------


@pytest.fixture
def cli(tmp_path, monkeypatch):
    from infercmp.cli import app

    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})
    return lambda *args: runner.invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "ten"], "error: --budget 'ten': give a duration like 90s, 10m or 1h"),
        (["--budget", "5s"], "error: --budget '5s' is under 10 s"),
        (["-e", "pytorch[cuda_graph=true]"], "error: --engine 'pytorch[cuda_graph=true]': tune "),
        (["--batch", "8"], "error: model 'tiny-cnn' fixes batch_size of input 'image' at 1; "),
        (["--objective", "speed"], "error: --objective 'speed': choose latency or throughput"),
        (["-e", "tensorrt", "-d", "cpu"], "error: --engine tensorrt runs on cuda only, not --de"),
    ],
)
def test_tune_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, message):
    result = cli("tune", "tiny-cnn", "-d", "cpu", "-o", str(tmp_path / "runs"), *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[0].startswith(message)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "9" * 400], f"error: --budget '{'9' * 40}' is over a week (604800 s)"),
        (["--timeout", "1e10"], "error: --timeout must be more than 0 and at most 86400 seconds"),
        (["-o", "runs\udcff"], "error: Invalid value for '--out' / '-o': 'runs\\xff' is not"),
    ],
)
def test_tune_refuses_what_a_run_cannot_hold_before_making_one(
    cli, tmp_path, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)
    result = cli("tune", "tiny-cnn", "-d", "cpu", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(message)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("runs")]


@pytest.mark.parametrize("run_json_writable", [True, False])
def test_tune_on_a_full_disk_is_one_line_and_marks_what_it_can(
    cli, tmp_path, monkeypatch, run_json_writable
):
    import errno

    from infercmp.store.run_store import RunStore
    from infercmp.tune import search as tune_mod

    runs = tmp_path / "runs"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(runs / "x" / TUNE_FILE))

    monkeypatch.setattr(tune_mod.Search, "run", disk_full)
    if not run_json_writable:
        monkeypatch.setattr(RunStore, "finish", disk_full)
    result = cli("tune", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "-o", str(runs))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    (error,) = [line for line in result.output.splitlines() if line.startswith("error")]
    assert error.startswith("error: cannot write the run's files (")
    assert "No space left on device" in error
    run = next(runs.iterdir())
    assert RunStore.open(run).status == ("failed" if run_json_writable else "running")
    assert read_leaderboard(run).status == "failed"


def test_tune_batch_measures_every_candidate_at_that_batch(
    cli, tmp_path, monkeypatch, shared_cache
):
    from infercmp.run import worker_process
    from infercmp.run.worker_process import WorkerOutcome

    specs = []

    def stub_worker(spec, timeout_s, sample_hz, samplers, on_phase=lambda phase: None):
        specs.append(spec)
        return WorkerOutcome("skipped", "worker not started in this test", None, {}, [], "")

    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    monkeypatch.setattr(worker_process, "run_worker", stub_worker)
    runs = tmp_path / "runs"
    result = cli(
        "tune", "tiny-two-io", "-d", "cpu", "-e", "onnxruntime", "--batch", "8", "-o", str(runs)
    )
    assert "Traceback" not in result.output and result.exit_code != 2, result.output
    assert specs and {spec.load.batch for spec in specs} == {8}
    run = next(runs.iterdir())
    board = read_leaderboard(run)
    assert board.entries and all(
        e.command.endswith(" -p fp32 --batch 8 --repeat 3") for e in board.entries
    )
    assert json.loads((run / "run.json").read_text())["settings"]["loads"][0]["batch"] == 8


def test_tune_prints_one_line_per_round_and_the_winners(cli, tmp_path, monkeypatch):
    import re

    from infercmp.tune import measure as tune_mod

    def measure(self, candidates, plan, timeout_s):
        for c in candidates:
            timeout_s(c)
            ms = 2.0 - 0.1 * len(c.options)
            yield Measured(
                c, "ok", p50_ms=ms, ci_low_ms=ms * 0.99, ci_high_ms=ms * 1.01,
                items_per_s=1000 / ms, processes=plan.repeat, wall_s=1.0,
            )  # fmt: skip

    monkeypatch.setattr(tune_mod.WorkerMeasurer, "measure", measure)
    runs = tmp_path / "runs"
    result = cli("tune", "tiny-cnn", "-d", "cpu", "-e", "pytorch", "-e", "onnxruntime", "-o", runs)
    assert result.exit_code == 0, result.output
    board = read_leaderboard(next(runs.iterdir()))
    lines = result.output.splitlines()
    rounds = [
        line
        for line in lines
        if re.match(r"(screen|expensive|confirm|final): \d+ of \d+ measured", line)
    ]
    assert len(rounds) == len(board.rounds) == 4
    screened = sum(any(r.round == "screen" for r in e.rounds) for e in board.entries)
    assert rounds[0].startswith(f"screen: {screened} of {screened} measured in ")
    assert "fastest: pytorch[" in rounds[0] and "s of the budget left" in rounds[0]
    # No line per candidate, no table of them: those are in the report.
    assert not [line for line in lines if line.startswith(("  [", " configuration"))]
    assert len(lines) <= len(rounds) + 2 * len(board.winners) + 8, result.output


PIPED_TUNE = """
import sys, time
from infercmp.tune import measure as tune
from infercmp.cli import main

def measure(self, candidates, plan, timeout_s):
    for c in candidates:
        timeout_s(c)
        time.sleep(0.2)
        yield tune.Measured(c, "ok", p50_ms=1.0, ci_low_ms=0.9, ci_high_ms=1.1, processes=1)

tune.WorkerMeasurer.measure = measure
sys.argv[0] = "infercmp"
main()
"""


def test_tune_into_a_closed_pipe_finishes_the_run(tmp_path):
    """`infercmp tune | head -1`: the reader goes away after one line; the search goes on."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    env = dict(os.environ, NO_COLOR="1", INFERCMP_CACHE_DIR=str(tmp_path / "c"))
    proc = subprocess.Popen(
        [sys.executable, "-c", PIPED_TUNE, "tune", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime",
         "-e", "pytorch", "-o", str(runs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout.readline().startswith(b"run directory: ")
    proc.stdout.close()  # as `head -1` exits
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()
    from infercmp.store.run_store import RunStore

    run = next(runs.iterdir())
    assert RunStore.open(run).status == "complete"
    assert read_leaderboard(run).status == "complete"


def test_tune_exits_1_when_every_candidate_failed(cli, tmp_path, monkeypatch):
    from infercmp.store.run_store import RunStore
    from infercmp.tune import measure as tune_mod

    def all_fail(self, candidates, plan, timeout_s):
        for c in candidates:
            timeout_s(c)
            yield Measured(c, "failed", "engine 'onnxruntime': no kernel for this model")

    monkeypatch.setattr(tune_mod.WorkerMeasurer, "measure", all_fail)
    runs = tmp_path / "runs"
    result = cli("tune", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "-o", str(runs))
    assert result.exit_code == 1, result.output
    assert "search: complete" not in result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith(
            "error: tune found nothing: no configuration passed: all 2 measured were dropped"
        )
    )
    run = next(runs.iterdir())
    assert read_leaderboard(run).status == "failed"
    assert RunStore.open(run).status == "complete"  # what it measured is stored, as bench does


def test_tune_runs_workers_stores_a_run_and_report_shows_the_leaderboard(cli, tmp_path):
    runs = tmp_path / "runs"
    result = cli(
        "tune", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "--budget", "120s",
        "--repeat", "2", "-o", str(runs),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = next(runs.iterdir())
    board = read_leaderboard(run)
    assert board.status == "complete"
    assert {e.variant for e in board.entries} == {None, "graph_optimization_level=extended"}
    (winner,) = board.winners
    assert winner.round == "final" and winner.best_p50_ms > 0
    # The winner's reproducing command, whole on its own line; which variant wins on tiny-cnn
    # (defaults or graph_optimization_level=extended) is the machine's coin toss.
    assert winner.command.startswith("infercmp bench tiny-cnn -e ")
    assert "onnxruntime" in winner.command
    assert f"    {winner.command}" in result.output.splitlines()
    from infercmp.store.run_store import RunStore

    stored = RunStore.open(run)
    assert stored.status == "complete"
    finals = [r for r in stored.results if len(r.processes) == 2]
    assert finals and all(r.ci_method.startswith("hierarchical") for r in finals)
    report = cli("report", str(run), "-o", str(tmp_path / "report.html"))
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report.html").read_text()
    assert 'id="tune"' in page and winner.command.replace("'", "&#x27;") in page


def test_tune_sigint_keeps_the_leaderboard_and_exits_1(tmp_path):
    """Ctrl-C in the middle of a real search: the run and tune.json say interrupted, and the
    candidates measured before it stay on the leaderboard."""
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", INFERCMP_CACHE_DIR=str(tmp_path / "c"))
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "tune", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime",
         "-e", "openvino", "--budget", "10m", "-o", str(runs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    board = None
    for _ in range(1200):  # wait (up to 10 minutes) for the first measured candidate
        found = list(runs.glob(f"*/{TUNE_FILE}"))
        board = read_leaderboard(found[0].parent) if found else None
        if board is not None and any(e.round for e in board.entries):
            break
        time.sleep(0.5)
    assert board is not None and any(e.round for e in board.entries), proc.stdout
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    run = next(runs.iterdir())
    board = read_leaderboard(run)
    assert board.status == "interrupted"
    assert board.detail == "stopped by SIGINT; the leaderboard holds what was measured"
    assert any(e.status == "ok" for e in board.entries)
    from infercmp.store.run_store import RunStore

    assert RunStore.open(run).status == "interrupted"
    assert "error: tune interrupted; the leaderboard so far is in" in output


def test_every_precision_refused_walks_no_option_mix(monkeypatch):
    """Review of #23 C.16: with no precision left, pairing options with precisions yielded
    nothing, so the bounded look at the mixes never counted one and walked all 11**9."""
    from infercmp.tune import candidates as tune

    space, drawn = HugeDescriptor.search_space, []

    class Counting:
        def iter_cheap(self, device):
            for mix in space.iter_cheap(device):
                drawn.append(mix)
                if len(drawn) > 1000:
                    raise AssertionError("walked the option mixes with no precision to pair")
                yield mix

    monkeypatch.setattr(tune, "search_space", lambda _descriptor: Counting())
    found, excluded = cheap_candidates(HugeDescriptor(), "cpu", Machine(0), ["bf16"], limit=10)
    assert found == [] and drawn == []
