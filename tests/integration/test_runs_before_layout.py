"""Issue 24 changed no behaviour: runs written by the code before the package move (fd34aa3) are
read, reported and compared exactly as that code did, and `engines --json` / `models --json` print
the same bytes for the built-in engines and models.

The expected files were made by the old code (`infercmp report RUN -f md|csv|json`, `infercmp
compare RUN RUN --format json`, `infercmp engines --json`, `infercmp models --json`) from the
repository at /work/main; the json reports name the run by its absolute path, replaced here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUNS = FIXTURES / "runs_before_layout"
EXPECTED = FIXTURES / "runs_before_layout_expected"
OLD_ROOT = "/work/main/tests/fixtures/runs_before_layout"
RUN_NAMES = sorted(p.name for p in RUNS.iterdir())
BUILT_IN_PACKAGES = {"infercmp", "infercmp-resnet50"}


def _infercmp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "infercmp"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A copy of the old runs: reading a run must not need to write into the fixture."""
    copy = tmp_path_factory.mktemp("old-runs") / "runs"
    shutil.copytree(RUNS, copy)
    return copy


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
@pytest.mark.parametrize("name", RUN_NAMES)
def test_an_old_run_reports_as_before(runs, tmp_path, name, fmt):
    out = tmp_path / f"report.{fmt}"
    result = _infercmp("report", str(runs / name), "-f", fmt, "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = (EXPECTED / f"{name}.{fmt}").read_text().replace(OLD_ROOT, str(runs))
    assert out.read_text() == expected


def test_an_old_run_compares_as_before(runs, tmp_path):
    run = str(runs / "20261206-112114-tiny-two-io")
    result = _infercmp("compare", run, run, "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = (EXPECTED / "compare.json").read_text().replace(OLD_ROOT, str(runs))
    assert result.stdout == expected


def _built_in(text: str) -> list[dict]:
    return [entry for entry in json.loads(text) if entry["package"] in BUILT_IN_PACKAGES]


@pytest.mark.parametrize("command", ["engines", "models"])
def test_listings_are_byte_identical(tmp_path, command):
    result = _infercmp(command, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = (EXPECTED / f"{command}.json").read_text()
    if _built_in(result.stdout) == json.loads(expected):
        # Only built-in entries here: the bytes themselves must match.
        assert result.stdout == expected
    else:
        # A test's fixture plugin may be installed beside them; the built-in entries still match.
        assert _built_in(result.stdout) == _built_in(expected)
