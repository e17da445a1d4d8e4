"""The console script imports only the module of the command it runs."""

from __future__ import annotations

import subprocess
import sys

from etcdguard.cli.registry import COMMAND_MODULES, COMMANDS, modules_for


def test_the_named_command_alone_is_registered() -> None:
    assert modules_for(["restore", "--yes"]) == ("etcdguard.cli.restore",)
    assert modules_for(["-q", "--config", "restore", "status"]) == ("etcdguard.cli.health",)  # a value, not a command
    assert modules_for(["-c", "x.yaml", "backups", "prune"]) == ("etcdguard.cli.backups", "etcdguard.cli.prune")


def test_help_and_unknown_words_register_every_command() -> None:
    assert modules_for([]) == COMMAND_MODULES
    assert modules_for(["--help"]) == COMMAND_MODULES
    assert modules_for(["restroe"]) == COMMAND_MODULES
    assert {m for mods in COMMANDS.values() for m in mods} == set(COMMAND_MODULES)


def test_a_command_runs_without_importing_the_others() -> None:
    code = ("import sys; sys.argv = ['etcdguard', 'restore', '--help']; import etcdguard.cli.main as m; "
            "print(sorted(n for n in sys.modules if n.startswith('etcdguard.cli.') and n != 'etcdguard.cli.main'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "etcdguard.cli.restore" in loaded
    for other in ("etcdguard.cli.serve", "etcdguard.cli.verify", "etcdguard.cli.demo"):
        assert other not in loaded
