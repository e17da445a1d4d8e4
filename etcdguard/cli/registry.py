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

def register_all(app: typer.Typer) -> None:
    """Import each command module that exists and let it add its commands."""
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)
