"""The ``etcdguard`` command line: a root Typer app with one module per command group."""

from __future__ import annotations

import contextlib
import gc
import os
import sys

# gRPC's C core logs TLS handshake failures to stderr itself; etcdguard reports them in one line.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from typer import _click as click

from etcdguard import __version__, interrupts
from etcdguard.cli import CONSOLE
from etcdguard.cli.common import AppState, exit_codes_epilog, report_interrupt, stderr, unwrap_help, usage_error
from etcdguard.cli.registry import COMMAND_MODULES, modules_for, register_all
from etcdguard.errors import ExitCode

app = typer.Typer(
    name="etcdguard",
    help="Encrypted, verified etcd backups, quorum monitoring and guided disaster recovery.",
    epilog=exit_codes_epilog(),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etcdguard {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="ETCDGUARD_CONFIG",
                                                help="YAML config file (see config/etcdguard.example.yaml).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the result.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Global options."""
    ctx.obj = AppState(config_file=config, quiet=quiet, verbose=verbose)


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """Let glibc keep at most ``arenas`` malloc arenas, unless ``MALLOC_ARENA_MAX`` says otherwise.

    The snapshot pipeline's threads (etcd reader, encoder, S3 part uploads) would otherwise each
    grow an arena of their own, which costs several MiB of resident memory for no speed. Must run
    before any thread starts; a no-op where the C library is not glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes

    m_arena_max = -8  # glibc's M_ARENA_MAX parameter number
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return
    mallopt(m_arena_max, arenas)


def main(args: list[str] | None = None) -> int:
    """Run the app on ``args`` and return the exit code, with every outcome in one place.

    Usage errors (unknown option, bad value) print one ``error:`` line and return 2; SIGTERM or
    SIGINT that reached no command's own handling returns 130 with its one line.
    """
    try:
        result = app(args=args, prog_name="etcdguard", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group run without a sub-command
        exc.show()
        return int(ExitCode.USAGE)
    except click.exceptions.UsageError as exc:
        return usage_error(exc)
    except click.exceptions.ClickException as exc:
        stderr.print(f"[bold red]error:[/] {escape(exc.format_message())}")
        return exc.exit_code
    except typer.Abort:  # a confirmation prompt closed with Ctrl-D
        stderr.print("[bold red]error:[/] aborted")
        return int(ExitCode.ABORTED)
    except KeyboardInterrupt as exc:
        report_interrupt(exc)
        return int(ExitCode.INTERRUPTED)
    code = result if isinstance(result, int) else 0
    if code == ExitCode.INTERRUPTED:  # Typer turned a KeyboardInterrupt into a bare exit 130
        report_interrupt(None)
    return code


def _leave(code: int) -> NoReturn:
    """Exit with ``code`` without the interpreter's teardown once nothing is left to finish.

    With boto3 and gRPC loaded, clearing every module at exit costs about 0.1 s of CPU at the end
    of every command (and of every node's part of a restore). The exit handlers run first (weakref
    finalizers among them) and the streams are flushed; while another non-daemon thread still
    runs, the normal exit waits for it as usual.
    """
    import atexit
    import logging
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    with interrupts.deferred():  # the work is done: a late SIGINT/SIGTERM changes nothing now
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
                stream.flush()
        os._exit(code)


def run() -> None:
    """Console-script entry point: SIGTERM is handled like SIGINT (see etcdguard.interrupts)."""
    import logging

    _cap_malloc_arenas()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    interrupts.install()
    gc.freeze()  # what the imports made stays: later collections need not look at it again
    gc.enable()  # held off while the console script imported (see etcdguard.cli)
    _leave(main(sys.argv[1:]))


# the console script registers only the command it runs; an importer (tests, completion) gets all
register_all(app, modules_for(sys.argv[1:]) if CONSOLE else COMMAND_MODULES)
unwrap_help(app)

if __name__ == "__main__":
    run()
