"""`infercmp bench --accuracy` for real: a small labelled classifier on PyTorch and ONNX Runtime
fp32, its table, report and compare; and a dataset that cannot be read, before any worker.

The model is a test plugin written here and made discoverable without pip: a `.dist-info` with
its entry point on PYTHONPATH, which the workers inherit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
"""A linear classifier of 6 features with a labelled dataset and a top-1 metric."""

import os

import numpy as np

from infercmp import ModelPlugin
from infercmp.workload.dataset import Sample


def _weights(degraded=False):
    weight = np.random.default_rng(7).standard_normal((4, 6)).astype(np.float32)
    return weight[::-1].copy() if degraded else weight  # degraded: the classes swapped


class FixtureAccuracy(ModelPlugin):
    name = "fixture-accuracy"

    def load_pytorch_module(self):
        import torch

        module = torch.nn.Linear(6, 4, bias=False)
        degraded = bool(os.environ.get("FIXTURE_DEGRADED"))
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(_weights(degraded)))
        return module.eval()

    def load_dataset(self):
        if os.environ.get("FIXTURE_BAD_DATASET"):
            raise OSError("the digits file is missing")
        rng = np.random.default_rng(11)
        for k in range(40):
            x = rng.standard_normal((1, 6)).astype(np.float32)
            label = int((x @ _weights().T).argmax())
            yield Sample(inputs=[x], label=(label + 1) % 4 if k % 5 == 0 else label)

    def evaluate(self, outputs, labels):
        return {"top1": float(np.mean(outputs[0].argmax(axis=-1) == labels))}
'''

CONFIG = """
name: fixture-accuracy
inputs:
  - name: features
    dtype_str: float32
    shapes:
      dims_names: [batch_size, features]
      example: [4, 6]
      runtime: [-1, 6]
      optimization: {min: [1, 6], opt: [4, 6], max: [8, 6]}
outputs:
  - name: logits
    shape: {runtime: [-1, 4], dims_names: [batch_size, classes]}
accuracy: {primary: top1, calibration_samples: 8}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The environment of a `infercmp` that finds the plugin, with a private cache."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "infercmp_fixture_accuracy"
    package.mkdir()
    (package / "__init__.py").write_text(PLUGIN)
    (package / "config.yaml").write_text(CONFIG)
    info = root / "infercmp_fixture_accuracy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: infercmp-fixture-accuracy\n")
    (info / "entry_points.txt").write_text(
        "[infercmp.models]\nfixture-accuracy = infercmp_fixture_accuracy:FixtureAccuracy\n"
    )
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "INFERCMP_CACHE_DIR": str(root / "cache"),
    }


def _infercmp(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "infercmp"), *args],
        capture_output=True,
        text=True,
        env={**env, **extra},
        check=False,
        timeout=600,
    )


def _bench(
    env: dict[str, str], out: Path, **extra: str
) -> tuple[subprocess.CompletedProcess, Path]:
    done = _infercmp(
        env, "bench", "fixture-accuracy", "-e", "pytorch", "-e", "onnxruntime", "-d", "cpu",
        "--iters", "20", "--warmup", "2", "--sample-hz", "0", "--accuracy", "-o", str(out),
        **extra,
    )  # fmt: skip
    runs = sorted(out.iterdir()) if out.is_dir() else []
    return done, runs[-1] if runs else out


@pytest.mark.slow
def test_accuracy_of_fp32_engines_in_the_table_report_and_compare(env, tmp_path):
    done, run = _bench(env, tmp_path / "base")
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert {r["engine"] for r in results} == {"pytorch", "onnxruntime"}
    for r in results:
        accuracy = r["accuracy"]
        # fp32 engines give PyTorch's answers: the same top-1, sample for sample.
        assert accuracy["metrics"]["top1"] == accuracy["reference_metrics"]["top1"]
        assert accuracy["change"] == {"top1": 0.0} and accuracy["top1_agreement"] == 1.0
        assert accuracy["samples"] == 32  # 40, less the 8 that calibrate
        assert r["iterations"] == 20  # the samples are in no latency
    assert "accuracy" in done.stdout and "(+0.0)" in done.stdout

    report = tmp_path / "report.json"
    assert _infercmp(env, "report", str(run), "-f", "json", "-o", str(report)).returncode == 0
    rows = json.loads(report.read_text())["rows"]
    assert all(row["accuracy_metric"] == "top1" and row["accuracy_change"] == 0.0 for row in rows)
    assert all(row["top1_agreement"] == 1.0 for row in rows)

    same = _infercmp(env, "compare", str(run), str(run))
    assert same.returncode == 0, same.stdout

    degraded, worse = _bench(env, tmp_path / "new", FIXTURE_DEGRADED="1")
    assert degraded.returncode == 0, degraded.stdout + degraded.stderr
    # --allow-env-change: the CPU placement of two runs on a shared VM may differ.
    verdict = _infercmp(
        env, "compare", str(run), str(worse), "--format", "json", "--allow-env-change"
    )
    assert verdict.returncode == 1, verdict.stdout
    document = json.loads(verdict.stdout)
    assert {c["verdict"] for c in document["comparisons"]} == {"accuracy regression"}
    assert all(c["accuracy"]["drop"] > 1 for c in document["comparisons"])


def test_a_dataset_that_cannot_be_read_stops_bench_before_any_worker(env, tmp_path):
    done, _ = _bench(env, tmp_path / "bad", FIXTURE_BAD_DATASET="1")
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "fixture-accuracy" in last and "the digits file is missing" in last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bad").exists()  # no run directory: nothing was measured or lost
