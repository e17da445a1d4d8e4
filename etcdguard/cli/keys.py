"""``etcdguard keys``: generate encryption and signing keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from etcdguard import interrupts
from etcdguard.backup.keys import generate_keys
from etcdguard.cli.common import handle_errors, stdout

keys_app = typer.Typer(help="Generate and inspect etcdguard keys.", no_args_is_help=True)


@keys_app.command("generate")
def generate(
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Directory to write the keys into.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing keys (they are lost!).")] = False,
) -> None:
    """Write identity.age (secret, 0600), recipient.txt (age1...), signing.key (0600) and signing.pub.

    Give the service only recipient.txt and signing.key. Keep identity.age offline (a secret
    store, a safe): it is needed to verify and restore backups, and nothing else can decrypt them.
    """
    with handle_errors(), interrupts.deferred():  # a whole key set or none, even on SIGTERM
        keys = generate_keys(directory, force=force)
    stdout.print(f"[green]wrote[/] {keys.identity}     (age identity: SECRET, keep offline)")
    stdout.print(f"[green]wrote[/] {keys.recipient}    ({keys.recipient_text})")
    stdout.print(f"[green]wrote[/] {keys.signing_key}     (Ed25519 signing key {keys.key_id}: secret)")
    stdout.print(f"[green]wrote[/] {keys.signing_pub}     (public: verifies manifests)")


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group."""
    app.add_typer(keys_app, name="keys")
