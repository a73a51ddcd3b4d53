"""The command table of infercmp.cli: `infercmp --help` lists each command without importing its
module, so the summary it shows must be the command's own first sentence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infercmp.cli import COMMANDS, load_command


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_listed_summary_is_the_commands_own(name):
    assert load_command(name).get_short_help_str(limit=10_000) == COMMANDS[name][1]


def test_help_imports_no_command_module():
    code = (
        "import sys\n"
        "sys.argv = ['infercmp', '--help']\n"
        "from infercmp.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('infercmp.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['infercmp.cli.options']"
