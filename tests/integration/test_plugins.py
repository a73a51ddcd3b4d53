"""Plugin discovery (fake and real entry points), the ModelPlugin defaults and the input checks."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from infercmp import ModelPlugin
from infercmp.core.errors import InfercmpError
from infercmp.workload.config import parse_config
from infercmp.workload.plugins import (
    ENTRY_POINT_GROUP,
    check_runtime_inputs,
    discover_plugins,
    get_plugin,
)
from infercmp.workload.shapes import default_experiment

FIXTURES = Path(__file__).parents[1] / "fixtures" / "plugins"

MIXED = {
    "name": "mixed",
    "inputs": [
        {
            "name": name,
            "dtype_str": dtype,
            "shapes": {
                "dims_names": ["batch", "n"],
                "example": [2, 5],
                "runtime": [-1, 5],
                "optimization": {"min": [1, 5], "opt": [2, 5], "max": [4, 5]},
            },
        }
        for name, dtype in [
            ("f32", "float32"),
            ("f16", "float16"),
            ("i64", "int64"),
            ("u8", "uint8"),
            ("flag", "bool"),
        ]
    ],
    "outputs": [{"name": "out", "shape": {"runtime": [-1], "dims_names": ["batch"]}}],
}


class Mixed(ModelPlugin):
    name = "mixed"

    def load_config(self):
        return parse_config(MIXED, "Mixed")


class Other(Mixed):
    name = "other"


class NotAPlugin:
    name = "not-a-plugin"


class Misnamed(Mixed):
    name = "something-else"


class BadConfig(ModelPlugin):
    name = "bad-config"
    config_file = "no-such-config.yaml"


# --- fake entry points ----------------------------------------------------------------------


@dataclass
class FakeEntryPoint:
    """What plugins.py uses of importlib.metadata.EntryPoint: name, value, dist, load()."""

    name: str
    value: str
    dist: SimpleNamespace | None
    target: object = None
    error: Exception | None = None
    group: str = ENTRY_POINT_GROUP

    def load(self):
        if self.error is not None:
            raise self.error
        return self.target


def fake(name, target=None, package="fake-dist", error=None, value=None):
    return FakeEntryPoint(
        name=name,
        value=value or f"fake_module:{getattr(target, '__name__', 'X')}",
        dist=SimpleNamespace(name=package),
        target=target,
        error=error,
    )


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the environment's entry points with the given ones, as plugins.py reads them."""

    def install(*eps):
        def entry_points(**params):
            assert params == {"group": ENTRY_POINT_GROUP}
            return list(eps)

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    return install


def test_discover_lists_without_importing(entry_points):
    calls = []

    class Spy(FakeEntryPoint):
        def load(self):
            calls.append(self.name)
            return super().load()

    entry_points(Spy("mixed", "m:Mixed", SimpleNamespace(name="pkg"), target=Mixed))
    entries = discover_plugins()
    assert list(entries) == ["mixed"] and calls == []
    assert entries["mixed"].package == "pkg" and entries["mixed"].target == "m:Mixed"
    assert isinstance(get_plugin("mixed"), Mixed) and calls == ["mixed"]


def test_discover_sorts_by_name(entry_points):
    entry_points(fake("other", Other), fake("mixed", Mixed))
    assert list(discover_plugins()) == ["mixed", "other"]


def test_duplicate_names_are_an_error_naming_both_distributions(entry_points):
    entry_points(
        fake("mixed", Mixed, package="first-dist", value="first:Mixed"),
        fake("mixed", Mixed, package="second-dist", value="second:Mixed"),
    )
    entry = discover_plugins()["mixed"]
    assert entry.load() is None
    expected = (
        "model name 'mixed' is registered by two packages: 'first-dist' (first:Mixed) and "
        "'second-dist' (second:Mixed); uninstall one of them"
    )
    assert entry.error == expected
    with pytest.raises(InfercmpError) as info:
        get_plugin("mixed")
    assert str(info.value) == (
        f"model 'mixed' from package 'first-dist' is unavailable: {expected}"
    )


def test_same_distribution_seen_twice_on_sys_path_is_not_a_duplicate(entry_points):
    entry_points(fake("mixed", Mixed, value="m:Mixed"), fake("mixed", Mixed, value="m:Mixed"))
    assert isinstance(get_plugin("mixed"), Mixed)


def test_plugin_raising_on_import_is_unavailable_with_package_and_error(entry_points):
    boom = ImportError("No module named 'torchvision'")
    entry_points(fake("broken", error=boom, package="broken-dist"), fake("mixed", Mixed))
    entries = discover_plugins()
    assert entries["broken"].load() is None
    assert entries["broken"].package == "broken-dist"
    assert entries["broken"].error == "ImportError: No module named 'torchvision'"
    assert entries["mixed"].load() is not None  # one broken plugin does not hide the others
    with pytest.raises(InfercmpError) as info:
        get_plugin("broken")
    assert str(info.value) == (
        "model 'broken' from package 'broken-dist' is unavailable: "
        "ImportError: No module named 'torchvision'"
    )


def test_plugin_raising_anything_on_import_is_unavailable(entry_points):
    entry_points(fake("broken", error=ZeroDivisionError("division by zero")))
    entry = discover_plugins()["broken"]
    assert entry.load() is None and entry.error == "ZeroDivisionError: division by zero"


def test_unknown_model_suggests_closest_names(entry_points):
    entry_points(fake("mixed", Mixed), fake("other", Other), fake("resnet50", Mixed))
    with pytest.raises(InfercmpError) as info:
        get_plugin("mixd")
    assert str(info.value) == (
        "unknown model 'mixd'; did you mean 'mixed'? (installed models: mixed, other, "
        "resnet50; see 'infercmp models')"
    )


def test_unknown_model_suggests_names_containing_it(entry_points):
    """Issue 14: 'gru' got no suggestion although 'newcomer-gru' was installed."""
    entry_points(fake("newcomer-gru", Mixed), fake("other", Other), fake("gru-large", Mixed))
    with pytest.raises(InfercmpError) as info:
        get_plugin("gru")
    assert str(info.value) == (
        "unknown model 'gru'; did you mean 'gru-large', 'newcomer-gru'? (installed models: "
        "gru-large, newcomer-gru, other; see 'infercmp models')"
    )


def test_a_plugin_importing_torch_at_module_level_is_named_with_a_fake_torch(
    entry_points, monkeypatch
):
    monkeypatch.delitem(sys.modules, "torch", raising=False)

    class ImportsTorch(FakeEntryPoint):
        def load(self):
            # What `import torch` at the top does; through monkeypatch, so that the fake is gone
            # after the test even where torch had not been imported before it (the fake stayed
            # and broke every later test that imports torch, when this one ran first).
            monkeypatch.setitem(sys.modules, "torch", type(sys)("torch"))
            return Mixed

    entry_points(
        ImportsTorch("mixed", "heavy_module:Mixed", SimpleNamespace(name="heavy-dist")),
        fake("other", Other),
    )
    entries = discover_plugins()
    assert entries["mixed"].load() is not None and entries["other"].load() is not None
    assert entries["mixed"].slow_import_warning == (
        "plugin 'mixed' (package 'heavy-dist') imports torch when it is imported, which slows "
        "every 'infercmp models'; import it inside load_pytorch_module() (see docs/plugins.md)"
    )
    assert entries["other"].slow_import_warning is None


def test_infercmp_models_warns_about_a_real_plugin_importing_torch(tmp_path):
    package = tmp_path / "heavy_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch  # what docs/plugins.md says not to do\n"
        "from infercmp.workload.config import parse_config\n"
        "from infercmp.models.tiny_cnn import TinyCNN\n\n"
        "class Heavy(TinyCNN):\n    name = 'heavy'\n"
        "    def load_config(self):\n"
        "        return parse_config({**TinyCNN().config.model_dump(), 'name': 'heavy'}, 'x')\n"
    )
    dist = tmp_path / "heavy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: heavy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nheavy = heavy_plugin:Heavy\n")
    result = run_cli(tmp_path, "models", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: plugin 'heavy' (package 'heavy-plugin') imports torch when it is imported, "
        "which slows every 'infercmp models'; import it inside load_pytorch_module() (see "
        "docs/plugins.md)"
    ]
    assert {row["name"]: row["available"] for row in json.loads(result.stdout)}["heavy"]


def test_unknown_model_with_nothing_close(entry_points):
    entry_points(fake("mixed", Mixed))
    with pytest.raises(InfercmpError) as info:
        get_plugin("zzzzzz")
    assert str(info.value) == (
        "unknown model 'zzzzzz' (installed models: mixed; see 'infercmp models')"
    )


def test_unknown_model_with_no_models_installed(entry_points):
    entry_points()
    with pytest.raises(InfercmpError, match=r"\(installed models: none; see 'infercmp models'\)"):
        get_plugin("resnet50")


def test_class_not_deriving_from_model_plugin_is_unavailable(entry_points):
    entry_points(fake("not-a-plugin", NotAPlugin, value="m:NotAPlugin"))
    entry = discover_plugins()["not-a-plugin"]
    assert entry.load() is None
    assert entry.error == "TypeError: m:NotAPlugin is not a subclass of infercmp.ModelPlugin"


def test_entry_point_to_a_function_is_unavailable(entry_points):
    entry_points(fake("func", target=len, value="builtins:len"))
    entry = discover_plugins()["func"]
    assert entry.load() is None
    assert entry.error == "TypeError: builtins:len is not a subclass of infercmp.ModelPlugin"


def test_name_mismatch_is_unavailable(entry_points):
    entry_points(fake("mixed", Misnamed, value="m:Misnamed"))
    entry = discover_plugins()["mixed"]
    assert entry.load() is None
    assert entry.error == (
        "TypeError: m:Misnamed has name 'something-else' but is registered as 'mixed'"
    )


def test_broken_config_makes_the_plugin_unavailable_not_the_cli(entry_points):
    entry_points(fake("bad-config", BadConfig))
    entry = discover_plugins()["bad-config"]
    assert entry.load() is None
    assert entry.error.startswith("ConfigError: ")
    assert entry.error.endswith("no-such-config.yaml: no such file")


def test_real_entry_point_object_without_distribution(entry_points):
    ep = importlib.metadata.EntryPoint(
        name="tiny-cnn", value="infercmp.models.tiny_cnn:TinyCNN", group=ENTRY_POINT_GROUP
    )
    entry_points(ep)
    entry = discover_plugins()["tiny-cnn"]
    assert entry.package == "<unknown package>"
    assert type(entry.load()).__name__ == "TinyCNN"


def test_builtin_models_are_registered_through_entry_points():
    entries = discover_plugins()
    for name in ("tiny-cnn", "tiny-two-io", "tiny-encoder"):
        assert entries[name].package == "infercmp"
        assert entries[name].target.startswith("infercmp.models.")


# --- the ModelPlugin defaults ---------------------------------------------------------------


def test_default_example_inputs_are_seeded_repeatable_and_honour_dtypes():
    shapes = [(2, 5), (3, 5), (2, 5), (1, 5), (4, 5)]
    first = Mixed().load_example_inputs(shapes)
    second = Mixed().load_example_inputs(shapes)
    assert [a.dtype.name for a in first] == ["float32", "float16", "int64", "uint8", "bool"]
    assert [a.shape for a in first] == shapes
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in (first[0], first[2])}) == 2
    assert first[0].std() > 0  # random, not zeros


def test_default_example_inputs_need_one_shape_per_input():
    with pytest.raises(InfercmpError) as info:
        Mixed().load_example_inputs([(2, 5)])
    assert str(info.value) == (
        "model 'mixed': got 1 example shape(s) for 5 input(s) (f32, f16, i64, u8, flag)"
    )


def test_default_preprocess_returns_inputs_unchanged():
    arrays = Mixed().load_example_inputs([(2, 5)] * 5)
    out = Mixed().preprocess(arrays)
    assert isinstance(out, list) and len(out) == len(arrays)
    assert all(a is b for a, b in zip(out, arrays))


def test_default_config_file_is_found_next_to_the_plugin_module():
    from infercmp.models.tiny_two_io import TinyTwoIO

    assert TinyTwoIO().config.name == "tiny-two-io"


def test_load_pytorch_module_must_be_implemented():
    with pytest.raises(NotImplementedError, match="Mixed must implement load_pytorch_module"):
        Mixed().load_pytorch_module()


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-two-io", "tiny-encoder"])
def test_builtin_preprocessing_matches_their_configs(name):
    plugin = get_plugin(name)
    experiment = default_experiment(plugin.config)
    arrays = plugin.preprocess(plugin.load_example_inputs(list(experiment.shapes)))
    check_runtime_inputs(plugin.config, arrays)


# --- check_runtime_inputs names the wrong input ---------------------------------------------


def _good_arrays():
    return Mixed().load_example_inputs([(2, 5)] * 5)


def test_check_runtime_inputs_accepts_matching_arrays():
    check_runtime_inputs(Mixed().config, _good_arrays())


def test_check_runtime_inputs_count():
    with pytest.raises(InfercmpError) as info:
        check_runtime_inputs(Mixed().config, _good_arrays()[:3])
    assert str(info.value) == (
        "model 'mixed': preprocess() returned 3 arrays but the config declares 5 inputs "
        "(f32, f16, i64, u8, flag)"
    )


def test_check_runtime_inputs_rank():
    arrays = _good_arrays()
    arrays[2] = arrays[2][None]
    with pytest.raises(InfercmpError) as info:
        check_runtime_inputs(Mixed().config, arrays)
    assert str(info.value) == (
        "model 'mixed', input 'i64': preprocess() returned shape (1, 2, 5) (rank 3) but the "
        "config's runtime shape [-1, 5] has rank 2"
    )


def test_check_runtime_inputs_static_dims():
    arrays = _good_arrays()
    arrays[1] = np.zeros((2, 6), dtype=np.float16)
    with pytest.raises(InfercmpError) as info:
        check_runtime_inputs(Mixed().config, arrays)
    assert (
        str(info.value)
        == "model 'mixed', input 'f16': dimension 1 (n) is 6 but the config fixes it at 5"
    )


def test_check_runtime_inputs_dynamic_dims_may_vary():
    arrays = [a.repeat(3, axis=0) for a in _good_arrays()]
    check_runtime_inputs(Mixed().config, arrays)


def test_check_runtime_inputs_dtype():
    arrays = _good_arrays()
    arrays[3] = arrays[3].astype(np.int32)
    with pytest.raises(InfercmpError) as info:
        check_runtime_inputs(Mixed().config, arrays)
    assert str(info.value) == (
        "model 'mixed', input 'u8': preprocess() returned dtype int32 but the config says uint8"
    )


def test_check_runtime_inputs_not_an_array():
    arrays = _good_arrays()
    arrays[0] = arrays[0].tolist()
    with pytest.raises(InfercmpError) as info:
        check_runtime_inputs(Mixed().config, arrays)
    assert str(info.value) == (
        "model 'mixed', input 'f32': preprocess() returned list, expected a numpy array"
    )


# --- the reference resnet50 plugin ----------------------------------------------------------


@pytest.fixture
def resnet50():
    module = pytest.importorskip(
        "infercmp_resnet50", reason="the example plugin examples/models/resnet50 is not installed"
    )
    return module.ResNet50()


def test_resnet50_preprocessing_gives_normalised_float32_nchw(resnet50):
    (image,) = resnet50.load_example_inputs([(224, 224, 3)])
    assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
    (tensor,) = resnet50.preprocess([image])
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 224, 224)
    expected = (image.transpose(2, 0, 1).astype(np.float32) / 255.0 - 0.45) / 0.225
    np.testing.assert_allclose(tensor[0], expected, rtol=1e-6, atol=1e-6)
    check_runtime_inputs(resnet50.config, [tensor])


def test_resnet50_preprocessing_constants(resnet50):
    black = np.zeros((4, 6, 3), dtype=np.uint8)
    white = np.full((4, 6, 3), 255, dtype=np.uint8)
    (low,) = resnet50.preprocess([black])
    (high,) = resnet50.preprocess([white])
    assert low.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(low, -0.45 / 0.225, rtol=1e-6)
    np.testing.assert_allclose(high, (1 - 0.45) / 0.225, rtol=1e-6)


def test_resnet50_example_inputs_are_repeatable(resnet50):
    a = resnet50.load_example_inputs([(32, 48, 3)])[0]
    b = resnet50.load_example_inputs([(32, 48, 3)])[0]
    np.testing.assert_array_equal(a, b)
    (tensor,) = resnet50.preprocess([a])
    assert tensor.shape == (1, 3, 32, 48)


def test_resnet152_shares_the_config_under_its_own_name(resnet50):
    from infercmp_resnet50 import ResNet152

    config = ResNet152().config
    assert config.name == "resnet152"
    assert config.model_dump(exclude={"name"}) == resnet50.config.model_dump(exclude={"name"})


def test_resnet50_dataset_is_generated_images_without_labels(resnet50):
    from infercmp_resnet50 import synthetic_image

    from infercmp.workload.dataset import evaluate_checked, load_samples

    loaded = load_samples(resnet50, limit=3)
    assert len(loaded) == 3 and loaded.labels is None
    assert [row[0].shape for row in loaded.inputs] == [(1, 3, 224, 224)] * 3
    assert load_samples(resnet50, limit=3).fingerprint == loaded.fingerprint  # seeded
    first, second = synthetic_image(0), synthetic_image(1)
    assert first.shape == (224, 224, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    # structured, unlike the example's uniform noise: neighbouring pixels are alike
    (noise,) = resnet50.load_example_inputs([(224, 224, 3)])
    for image, alike in ((first, True), (noise, False)):
        step = np.abs(np.diff(image.astype(np.int16), axis=1)).mean()
        assert bool(step < 10) is alike
    assert evaluate_checked(resnet50, [], None) == {}  # agreement only: no primary metric


# --- real third-party packages, pip-installed ----------------------------------------------


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory):
    """The fixture plugin packages pip-installed into a private --target directory.

    Nothing is installed into the test environment itself; subprocesses see the packages by
    putting the directory on PYTHONPATH, as a user's site-packages would.
    """
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("building the fixture plugins needs hatchling (in infercmp's dev extra)")
    root = tmp_path_factory.mktemp("plugins")
    sources = []
    for name in ("good", "broken", "duplicate", "dataset"):
        # Build from a copy so that the build leaves nothing behind in the source tree.
        sources.append(shutil.copytree(FIXTURES / name, root / "src" / name))
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
    )
    return target


def run_cli(target: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_installed_plugin_appears_in_models(installed_plugins):
    result = run_cli(installed_plugins, "models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["fixture-good"] == {
        "name": "fixture-good",
        "package": "infercmp-fixture-good",
        "available": True,
        "inputs": "features:float32[?,4]",
        "outputs": "scores[?,2]",
    }


def test_broken_installed_plugin_is_listed_as_unavailable(installed_plugins):
    result = run_cli(installed_plugins, "models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["fixture-broken"] == {
        "name": "fixture-broken",
        "package": "infercmp-fixture-broken",
        "available": False,
        "error": "RuntimeError: fixture plugin broken on purpose",
    }
    assert rows["tiny-two-io"]["available"]  # the other models are still there


def test_installed_plugin_duplicating_a_builtin_name_names_both(installed_plugins):
    result = run_cli(installed_plugins, "models", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    error = rows["tiny-cnn"]["error"]
    assert not rows["tiny-cnn"]["available"]
    assert "'infercmp' (infercmp.models.tiny_cnn:TinyCNN)" in error
    assert "'infercmp-fixture-duplicate' (infercmp_fixture_duplicate:TinyCNNAgain)" in error
    result = run_cli(installed_plugins, "config", "show", "tiny-cnn")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "registered by two packages" in result.stderr


def test_installed_plugin_table_and_config(installed_plugins):
    table = run_cli(installed_plugins, "models")
    assert table.returncode == 0, table.stderr
    assert "fixture-good" in table.stdout and "infercmp-fixture-good" in table.stdout
    assert "unavailable: RuntimeError: fixture plugin broken on purpose" in table.stdout

    config_file = installed_plugins / "infercmp_fixture_good" / "config.yaml"
    result = run_cli(installed_plugins, "config", "validate", str(config_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok {config_file}\n"

    shown = run_cli(installed_plugins, "config", "show", "fixture-good")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("name: fixture-good\n")

    broken = run_cli(installed_plugins, "config", "show", "fixture-broken")
    assert broken.returncode == 2
    assert broken.stderr.strip() == (
        "error: model 'fixture-broken' from package 'infercmp-fixture-broken' is unavailable: "
        "RuntimeError: fixture plugin broken on purpose"
    )


# A plugin with a dataset, as docs/plugins.md describes it: what bench --accuracy reads of it.
DATASET_SCRIPT = """
import json, sys
from infercmp.artifacts.accuracy_set import ensure_accuracy_set
from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.samples import read_samples
from infercmp.core.errors import InfercmpError
from infercmp.workload.dataset import load_samples
from infercmp.workload.plugins import get_plugin

plugin = get_plugin(sys.argv[1])
try:
    loaded = load_samples(plugin)
except InfercmpError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
made = ensure_accuracy_set(plugin, ArtifactCache(sys.argv[2]), evaluation=None, calibration=16)
print(json.dumps({
    "samples": len(loaded),
    "labels": loaded.labels.tolist(),
    "evaluated": made.count,
    "calibration": [made.calibration.count, made.calibration.source],
    "metrics": made.reference_metrics,
    "stored": len(read_samples(made.evaluation)),
}))
"""


def run_dataset_script(target: Path, model: str, cache: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", DATASET_SCRIPT, model, str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_installed_plugin_with_a_dataset_gives_its_accuracy_set(installed_plugins, tmp_path):
    result = run_dataset_script(installed_plugins, "fixture-dataset", tmp_path / "cache")
    assert result["samples"] == 48 and set(result["labels"]) <= {0, 1, 2}
    # 16 calibrate (the config's calibration_samples), the other 32 are evaluated
    assert result["evaluated"] == result["stored"] == 32
    assert result["calibration"] == [16, "dataset"]
    assert result["metrics"] == {"top1": 1.0}  # the labels are the model's own argmax


def test_installed_plugin_with_a_broken_dataset_is_one_line(installed_plugins, tmp_path):
    result = run_dataset_script(installed_plugins, "fixture-dataset-broken", tmp_path / "cache")
    assert result["error"] == (
        "model 'fixture-dataset-broken' (package 'infercmp-fixture-dataset'): dataset sample 5: "
        "input 'features': dimension 1 (features) is 5 but the config fixes it at 4 "
        "(preprocess() gave shapes (1, 5)); load_dataset() must give each sample's inputs in the "
        "raw form load_example_inputs() returns"
    )
