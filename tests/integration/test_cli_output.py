"""Output at 80 columns and in pipes: tables stack instead of losing cells, commands stay whole."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infercmp.cli.options import print_table


def _printed(table: Table, width: int, heading: int = 1) -> str:
    out = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    print_table(table, heading, to=out)
    return out.file.getvalue()


def _wide_table() -> Table:
    table = Table(title="t")
    for name in ("model", "package", "inputs", "outputs"):
        table.add_column(name, no_wrap=True)
    table.add_row("enc", "infercmp", "input_ids:int64[?,?]\nattention_mask:int64[?,?]", "y[?,32]")
    table.add_row("resnet50", "infercmp-resnet50", "image:float32[1,3,?,?]", "probs[1,1000]")
    return table


def test_a_table_that_fits_is_printed_as_a_table():
    text = _printed(_wide_table(), 100)
    assert "┃ model    ┃ package           ┃ inputs" in text
    assert "│ resnet50 │ infercmp-resnet50 │ image:float32[1,3,?,?]    │ probs[1,1000] │" in text


def test_a_table_wider_than_the_console_stacks_its_rows_with_every_cell_whole():
    assert _printed(_wide_table(), 60).splitlines() == [
        "t",
        "enc",
        "  package: infercmp",
        "  inputs: input_ids:int64[?,?]",
        "          attention_mask:int64[?,?]",
        "  outputs: y[?,32]",
        "resnet50",
        "  package: infercmp-resnet50  inputs: image:float32[1,3,?,?]",
        "  outputs: probs[1,1000]",
    ]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script's code path, piped (not a terminal) at the default 80 columns."""
    env = dict(os.environ, NO_COLOR="1", COLUMNS="80")
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_models_at_80_columns_never_splits_a_shape(tmp_path):
    """Issue 14: `float32[1,3,?,?]` was folded as `float32[1,3,?` / `,?]`."""
    result = _cli("models", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for token in ("image:float32[1,3,?,?]", "attention_mask:int64[?,?]", "pooled[?,32]"):
        assert token in result.stdout
    assert max(map(len, result.stdout.splitlines())) <= 80


def test_bench_at_80_columns_keeps_every_number_and_a_pasteable_report_command(tmp_path):
    """Issue 14: p99 and items/s were dropped silently and `infercmp report` split in two."""
    result = _cli(
        "bench", "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "--iters", "20", "--warmup", "2",
        "--out", "my runs", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The table ends at its notes, or at the parity legend when no row has a note.
    end = next(i for i, s in enumerate(lines) if s[:3] == "[1]" or s.startswith("parity:"))
    table = lines[lines.index("infercmp bench") : end]
    assert table[1] == "onnxruntime cpu fp32 32x32x3 ok"
    shown = " ".join(table)
    for column in ("p50 ms: ", "±CI%: ", "p99 ms: ", "items/s: ", "RSS MiB: ", "parity: ok"):
        assert column in shown
    assert max(map(len, table)) <= 80
    (command,) = [line for line in lines if line.startswith("report:")]
    label, *argv = shlex.split(command)
    assert argv[:2] == ["infercmp", "report"] and len(argv) == 3
    assert (tmp_path / argv[2] / "run.json").is_file()
