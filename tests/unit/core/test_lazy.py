"""infercmp.core.lazy: a module behind a proxy is imported on first use, and a missing one says
which extra installs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infercmp.core.errors import MissingDependency
from infercmp.core.lazy import lazy_import


def test_nothing_is_imported_until_an_attribute_is_read():
    code = (
        "import sys\n"
        "from infercmp.core.lazy import lazy_import\n"
        "json = lazy_import('json')\n"
        "print('json' in sys.modules)\n"
        "print(json.dumps([1]))\n"
        "print('json' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "[1]", "True"]


def test_the_proxy_gives_the_module_attributes():
    import fractions

    proxy = lazy_import("fractions")
    assert proxy.Fraction is fractions.Fraction
    assert "Fraction" in dir(proxy)


def test_a_missing_module_names_its_extra():
    proxy = lazy_import("no_such_module_xyz", extra="openvino", purpose="The OpenVINO engine")
    with pytest.raises(MissingDependency) as info:
        proxy.anything  # noqa: B018
    message = str(info.value)
    assert message.startswith("The OpenVINO engine needs the Python module 'no_such_module_xyz'")
    assert message.endswith("install it with: pip install 'infercmp[openvino]'")


def test_a_patch_of_the_real_module_is_seen_through_the_proxy(monkeypatch):
    import fractions

    proxy = lazy_import("fractions")
    assert proxy.Fraction is fractions.Fraction  # loaded
    monkeypatch.setattr(fractions, "Fraction", "patched")
    assert proxy.Fraction == "patched"
    monkeypatch.undo()
    assert proxy.Fraction is fractions.Fraction
