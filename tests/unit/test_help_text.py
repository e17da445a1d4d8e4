"""Every command's --help reads well at 80 columns: nothing wider, no hard-wrapped ragged paragraphs."""

from __future__ import annotations

import itertools
import re

import pytest
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from etcdguard.cli.main import app

WIDTH = 80
EXIT_CODE_ROW = re.compile(r"^ +\d{1,3}  \S")  # a row of the exit-code table, not prose


def command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = [[]]

    def walk(group: TyperGroup, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            paths.append([*prefix, name])
            if isinstance(command, TyperGroup):
                walk(command, [*prefix, name])

    assert isinstance(root, TyperGroup)
    walk(root, [])
    return paths


def prose_paragraphs(text: str) -> list[list[str]]:
    """Runs of consecutive non-empty lines outside the option boxes."""
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.lstrip()[:1] in "│╭╰" or EXIT_CODE_ROW.match(line):
            paragraphs.append([])
        else:
            paragraphs[-1].append(line.rstrip())
    return [p for p in paragraphs if len(p) > 1]


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "etcdguard")
def test_help_fits_80_columns_without_ragged_lines(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    text = result.output
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    for paragraph in prose_paragraphs(text):
        for line, following in itertools.pairwise(paragraph):
            # a line cut short although the next word would have fitted: a hard wrap in the source
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > WIDTH - 2, (path, line, following)
