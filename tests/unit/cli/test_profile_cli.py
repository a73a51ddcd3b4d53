"""`infercmp profile` and `bench --profile`: the flags become the request's ProfileSpec, the
first worker of an engine with a profiler gets it, bad values are one line (exit 2), and the
command prints the aligned tables of the run it made."""

from __future__ import annotations

import pytest
from profile_runs import RESNET_LIKE, add_profiles
from synthetic_runs import Combo, make_run, run_main

from infercmp.cli import main
from infercmp.core.contract import Measurement, ProfileSpec
from infercmp.core.errors import InfercmpError
from infercmp.engines.registry import get_descriptor
from infercmp.run import worker_process
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import Artifacts
from infercmp.run.session import BenchOutcome
from infercmp.store.run_store import RunStore
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The exit code and standard output of `infercmp ARGS`."""
    monkeypatch.setattr("sys.argv", ["infercmp", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().out


def test_profile_help(monkeypatch, capsys):
    code, out = _main(monkeypatch, capsys, "profile", "--help")
    assert code == 0
    for flag in ("--engine", "--device", "--precision", "--shape", "--batch", "--depth"):
        assert flag in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "tiny-cnn", "--depth", "0"], "--depth 0: give 1"),
        (["bench", "tiny-cnn", "--profile-iterations", "0"], "--profile-iterations 0"),
    ],
)
def test_bad_values_are_one_line(capsys, args, message):
    code, err = run_main(capsys, *args)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and message in err


def test_the_flags_reach_the_request(monkeypatch, capsys):
    from infercmp.cli import bench as bench_module

    seen = []

    def stop(request, view, resources):
        seen.append((request.profile, request.flags["profile"], request.engines))
        raise InfercmpError("stop here")

    monkeypatch.setattr(bench_module.session, "run_session", stop)
    run_main(capsys, "bench", "tiny-cnn", "--profile")
    run_main(capsys, "bench", "tiny-cnn", "--profile-iterations", "7")
    run_main(capsys, "bench", "tiny-cnn")
    run_main(capsys, "profile", "tiny-cnn", "-e", "pytorch", "--profile-iterations", "5")
    assert seen == [
        (ProfileSpec(), True, []),
        (ProfileSpec(iterations=7), False, []),
        (None, False, []),
        (ProfileSpec(iterations=5), True, ["pytorch"]),
    ]


def test_profile_prints_the_tables_of_its_run(monkeypatch, capsys, tmp_path):
    from infercmp.cli import bench as bench_module

    def session(request, view, resources):
        run = make_run(
            tmp_path / "runs", [Combo("pytorch"), Combo("onnxruntime"), Combo("openvino")]
        )
        add_profiles(run, RESNET_LIKE)
        return BenchOutcome(run, "complete", RunStore.open(run).results, False)

    monkeypatch.setattr(bench_module.session, "run_session", session)
    monkeypatch.setattr(bench_module, "print_summary", lambda results, run_dir: None)
    code, out = _main(monkeypatch, capsys, "profile", "tiny-cnn", "--depth", "3")
    assert code == 0, out
    assert "modules at depth 3" in out and "layer1.0 (fused)" in out
    assert "layer1.0.conv1" not in out  # merged as onnxruntime fused it, in every column
    assert "by kind of work" in out and "n/a: openvino has no per-layer profiler" in out


def test_only_the_first_process_of_an_engine_with_a_profiler_profiles(monkeypatch, tmp_path):
    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["pytorch"], ["cpu"], None)
    artifacts = Artifacts(references={(plan.experiments[0].label, None): tmp_path / "ref.npz"})
    combo, spec = plan.runnable[0], ProfileSpec(iterations=4)

    def specs() -> list[ProfileSpec | None]:
        return [
            worker_process.worker_spec(
                plugin, combo, artifacts, Measurement(), tmp_path, process, spec
            ).profile
            for process in (0, 1)
        ]

    descriptor = get_descriptor("pytorch")
    monkeypatch.setattr(type(descriptor), "profiler", None)
    assert specs() == [None, None]  # no profiler: n/a at commit, no phase in the worker
    monkeypatch.setattr(type(descriptor), "profiler", "torch.profiler")
    assert specs() == [spec, None]


def test_report_shows_a_stored_profile_at_any_depth(tmp_path, monkeypatch, capsys):
    """The depth is the reader's choice: rows are stored at the leaf level, so a run profiled
    once reads at depth 1 (layer1) or 3 (layer1.0.conv1) without running again."""
    run = add_profiles(make_run(tmp_path / "runs", [Combo("pytorch")]), RESNET_LIKE)
    code, out = _main(monkeypatch, capsys, "report", str(run), "-f", "md", "--depth", "3")
    assert code in (0, None) and "| layer1.0.conv1 |" in out and "depth 3" in out
    code, out = _main(monkeypatch, capsys, "report", str(run), "-f", "md")
    assert "| layer1 |" in out and "layer1.0.conv1" not in out
    code, _ = _main(monkeypatch, capsys, "report", str(run), "--depth", "0")
    assert code == 2
