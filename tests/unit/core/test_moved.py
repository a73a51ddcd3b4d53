"""Issue 24: the import paths of 0.1.0 keep working, warn, and go in core.moved.REMOVE_IN."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import infercmp
from infercmp.core import moved


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# The paths docs/plugins.md and the examples show to plugin authors, with a name each must give.
DOCUMENTED = {
    "infercmp.config": "ModelConfig",
    "infercmp.plugins": "ModelPlugin",
    "infercmp.shapes": "default_experiment",
    "infercmp.results": "RunStore",
}


@pytest.mark.parametrize("old", sorted(moved.MOVED))
def test_every_old_path_resolves_and_warns(old):
    code = (
        "import importlib, warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        f"try:\n    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n    print('WARNED', w)\n"
        "else:\n    print('SILENT')\n"
    )
    # A fresh interpreter: the first import of an old path is the one that warns.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new = " and ".join(moved.new_paths(old))
    assert out.stdout.strip() == (
        f"WARNED {old} moved to {new}; import it from there "
        f"(the old path is removed in infercmp {moved.REMOVE_IN})"
    )


@pytest.mark.parametrize("old, name", sorted(DOCUMENTED.items()))
def test_documented_names_are_the_same_objects(old, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old)
    homes = [importlib.import_module(path) for path in moved.new_paths(old)]
    assert any(getattr(home, name, None) is getattr(module, name) for home in homes)


def test_a_missing_name_on_an_old_path_is_an_attribute_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module("infercmp.config")
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", sorted(moved.TUNE_NAMES))
def test_the_old_tune_module_names_resolve_from_the_package_and_warn(name):
    import infercmp.tune

    with pytest.warns(DeprecationWarning, match=rf"infercmp.tune.{name} moved to infercmp\."):
        value = getattr(infercmp.tune, name)
    homes = [importlib.import_module(path) for path in moved.TUNE_HOMES]
    assert any(getattr(home, name, None) is value for home in homes)


def test_the_tune_package_still_imports_its_own_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from infercmp.tune import candidates, measure, search

    assert {candidates.__name__, measure.__name__, search.__name__} == {
        "infercmp.tune.candidates",
        "infercmp.tune.measure",
        "infercmp.tune.search",
    }


def test_every_new_path_exists():
    for old in moved.MOVED:
        for new in moved.new_paths(old):
            importlib.import_module(new)


def test_the_old_paths_are_removed_before_their_version_ships():
    """Fails once infercmp's version reaches REMOVE_IN: then delete core/moved.py's MOVED."""
    assert _version(infercmp.__version__) < _version(moved.REMOVE_IN)


def test_entry_points_and_the_worker_module_resolve():
    from importlib.metadata import entry_points

    engines = {ep.name: ep for ep in entry_points(group="infercmp.engines")}
    for name in ("pytorch", "onnxruntime", "openvino", "tensorrt"):
        assert engines[name].value == f"infercmp.engines.{name}:DESCRIPTOR"
        assert engines[name].load().name == name
    out = subprocess.run(
        [sys.executable, "-m", "infercmp.worker"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert "usage: python -m infercmp.worker SPEC.json" in out.stderr
