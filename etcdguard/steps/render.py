"""Rendering step records for people: one line per step, or a table (Rich markup, escaped)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from etcdguard.steps.journal import Journal, StepRecord, StepState
from etcdguard.text import clean

MARKS = {
    StepState.pending: "[dim]pending[/]",
    StepState.running: "[blue]running[/]",
    StepState.done: "[green]ok[/]",
    StepState.failed: "[red]FAILED[/]",
    StepState.skipped: "[yellow]skipped[/]",
    StepState.undone: "[cyan]undone[/]",
}


def step_line(record: StepRecord, name_width: int = 16) -> str:
    """``  ok name     1.23s  detail`` (markup; the name and detail are escaped)."""
    seconds = f"{record.seconds:7.2f}s" if record.state not in (StepState.pending, StepState.skipped) \
        else " " * 8
    return f"  {MARKS[record.state]} {clean(record.name):<{name_width}} {seconds}  {clean(record.detail)}"


def step_lines(records: Iterable[StepRecord], name_width: int = 16) -> list[str]:
    """:func:`step_line` for each record."""
    return [step_line(r, name_width) for r in records]


def journal_table(journal: Journal) -> Table:
    """A table of the run's steps: state, name, seconds, detail."""
    table = Table(title=clean(f"{journal.kind} {journal.run_id}: {journal.outcome.value}"), box=None,
                  pad_edge=False)
    for column in ("state", "step", "seconds", "detail"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for r in journal.steps:
        seconds = "" if r.state in (StepState.pending, StepState.skipped) else f"{r.seconds:.2f}"
        table.add_row(MARKS[r.state], clean(r.name), seconds, clean(r.error or r.detail))
    return table
