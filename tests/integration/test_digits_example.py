"""The digits example plugin (examples/models/digits): deterministic training, cached weights,
its held-out dataset and top-1, and the package installing as a plugin."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infercmp.artifacts.accuracy_set import ensure_accuracy_set
from infercmp.artifacts.cache import ArtifactCache
from infercmp.workload.dataset import load_samples
from infercmp.workload.plugins import check_runtime_inputs
from infercmp.workload.shapes import default_experiment

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (its dependency)")
PACKAGE = Path(__file__).parents[2] / "examples" / "models" / "digits"
if importlib.util.find_spec("infercmp_digits") is None:  # not pip-installed: use the source
    sys.path.insert(0, str(PACKAGE / "src"))

from infercmp_digits import Digits, data, model  # noqa: E402


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory):
    """One weights cache for the module's tests, which load_pytorch_module() also uses."""
    path = tmp_path_factory.mktemp("digits") / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFERCMP_CACHE_DIR", str(path))
        yield path


def test_training_is_reproducible_and_its_weights_are_cached(weights_cache, monkeypatch):
    cached = model.trained_weights()  # trains, and stores them in the cache
    again = model.train()
    assert cached.keys() == again.keys()
    assert all(np.array_equal(cached[k].numpy(), again[k].numpy()) for k in cached)

    def no_training():
        raise AssertionError("trained again although the weights are cached")

    monkeypatch.setattr(model, "train", no_training)
    from_cache = model.trained_weights()
    assert all(np.array_equal(cached[k].numpy(), from_cache[k].numpy()) for k in cached)
    entries = ArtifactCache(weights_cache).entries("digits-weights")
    assert [e.key for e in entries] == [model.weights_key()]


def test_the_dataset_is_the_held_out_split_with_labels():
    images, labels = data.digits()
    train, test = data.split(len(labels))
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(labels) == 1797
    loaded = load_samples(Digits())
    assert len(loaded) == len(test) == 719
    np.testing.assert_array_equal(loaded.labels, labels[test])
    np.testing.assert_array_equal(loaded.inputs[0][0], data.to_runtime(images[test[:1]]))


def test_the_example_is_raw_digits_in_the_config_shape():
    plugin = Digits()
    (raw,) = plugin.load_example_inputs(default_experiment(plugin.config).shapes)
    assert raw.shape == (8, 8) and raw.dtype == np.uint8 and raw.max() <= 16
    check_runtime_inputs(plugin.config, plugin.preprocess([raw]))


def test_top1_on_the_held_out_digits(weights_cache, tmp_path):
    plugin = Digits()
    made = ensure_accuracy_set(
        plugin, ArtifactCache(tmp_path / "cache"), evaluation=None, calibration=128
    )
    assert (made.count, made.calibration.count, made.labelled) == (591, 128, True)
    assert made.reference_metrics["top1"] >= 0.95


def test_the_package_installs_as_a_plugin(tmp_path):
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("building the example needs hatchling (in infercmp's dev extra)")
    source = shutil.copytree(
        PACKAGE, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "models", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["digits"] == {
        "name": "digits",
        "package": "infercmp-digits",
        "available": True,
        "inputs": "image:float32[?,1,8,8]",
        "outputs": "logits[?,10]",
    }
    assert "digits" not in result.stderr  # no warning: torch is not imported with the plugin
