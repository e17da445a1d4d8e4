"""The ``etcdguard`` command line: a root Typer app with one module per command group."""

from __future__ import annotations

import os

# gRPC's C core logs TLS handshake failures to stderr itself; etcdguard reports them in one line.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from pathlib import Path
from typing import Annotated

import typer

from etcdguard import __version__
from etcdguard.cli.common import AppState, exit_codes_epilog
from etcdguard.cli.registry import register_all

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


def run() -> None:
    """Console-script entry point."""
    import logging
    import sys

    _cap_malloc_arenas()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


register_all(app)
