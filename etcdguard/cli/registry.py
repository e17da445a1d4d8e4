"""Wires every command module into the root app (each module exposes ``register(app)``)."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "etcdguard.cli.keys",
    "etcdguard.cli.snapshot",
    "etcdguard.cli.backups",
    "etcdguard.cli.prune",
    "etcdguard.cli.demo",
    "etcdguard.cli.health",
    "etcdguard.cli.verify",
    "etcdguard.cli.serve",
    "etcdguard.cli.member",
    "etcdguard.cli.kit",
    "etcdguard.cli.restore",
)

# the modules each top-level command needs (prune adds itself to the backups group)
COMMANDS: dict[str, tuple[str, ...]] = {
    "keys": ("etcdguard.cli.keys",),
    "snapshot": ("etcdguard.cli.snapshot",),
    "backups": ("etcdguard.cli.backups", "etcdguard.cli.prune"),
    "demo": ("etcdguard.cli.demo",),
    "status": ("etcdguard.cli.health",),
    "check": ("etcdguard.cli.health",),
    "verify": ("etcdguard.cli.verify",),
    "serve": ("etcdguard.cli.serve",),
    "member": ("etcdguard.cli.member",),
    "kit": ("etcdguard.cli.kit",),
    "restore": ("etcdguard.cli.restore",),
}
ROOT_OPTIONS_WITH_VALUE = ("--config", "-c")


def modules_for(argv: list[str]) -> tuple[str, ...]:
    """The command modules a command line needs: only its command's when it names one (it then
    starts without importing the others: a restore at 3 a.m. should not wait for them); every
    module for ``--help``, completion, or a word that is no command (the usage error lists them)."""
    args = iter(argv)
    for arg in args:
        if arg in ROOT_OPTIONS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return COMMANDS.get(arg, COMMAND_MODULES)
    return COMMAND_MODULES


def register_all(app: typer.Typer, modules: tuple[str, ...] = COMMAND_MODULES) -> None:
    """Import each of ``modules`` that exists and let it add its commands."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)
