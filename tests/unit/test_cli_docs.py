"""Exit codes are documented in the README and in --help, and match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdguard.cli.main import app
from etcdguard.errors import EXIT_CODE_HELP

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_exit_code_table_matches_the_code() -> None:
    rows = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|$", README.read_text(), re.M))
    assert {int(k): v for k, v in rows.items()} == {int(k): v for k, v in EXIT_CODE_HELP.items()}


@pytest.mark.parametrize("args", [["--help"], ["snapshot", "--help"], ["backups", "--help"], ["serve", "--help"]])
def test_help_lists_exit_codes(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for code, text in EXIT_CODE_HELP.items():
        assert re.search(rf"\b{int(code)}\s+{re.escape(text[:30])}", result.output), (code, result.output[-3000:])


def test_unknown_command_is_usage_error() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2
