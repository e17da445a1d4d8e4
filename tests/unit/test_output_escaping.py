"""Strings from a store or from etcd are shown, never obeyed: Rich markup and control characters."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from etcdguard.cli import health
from etcdguard.cli.render import clean, plain
from etcdguard.config import MonitorConfig
from etcdguard.monitor.report import run_checks
from tests.unit.test_monitor_fakes import cluster, mem

HOSTILE = "[red]evil[/red]\x1b[2J\x07\u202e"


def test_clean_escapes_markup_and_makes_controls_visible() -> None:
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system=None, width=200).print(f"name: {clean(HOSTILE)}")
    text = out.getvalue()
    assert "[red]evil[/red]" in text and "\\x1b[2J" in text and "\\x07" in text and "\\u202e" in text
    assert "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
    assert plain("tab\there") == "tab\\x09here"


def test_status_shows_a_hostile_member_name_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=250)
    monkeypatch.setattr(health, "stdout", console)
    hurt = cluster(mem("m0", leader=True), mem(HOSTILE, version="3.5.16" + HOSTILE),
                   mem("m2", up=False, error=f"etcd down: {HOSTILE}"))
    health.print_status(run_checks(hurt, MonitorConfig()))
    text = out.getvalue()
    assert text.count("[red]evil[/red]") >= 3  # name, version and error shown as typed
    assert "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
