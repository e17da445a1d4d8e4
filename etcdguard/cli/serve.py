"""``etcdguard serve``: the long-running backup service."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from etcdguard.cli import options as opt
from etcdguard.cli.common import exit_codes_epilog, handle_errors, settings, state
from etcdguard.service.logs import setup_logging


def serve(
    ctx: typer.Context,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    listen: Annotated[str | None, typer.Option("--listen", help="HTTP address (default 127.0.0.1:9479).")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text or json.")] = None,
) -> None:
    """Run scheduled backups, verification, retention and health checks until SIGTERM.

    Serves /healthz (the loop ran recently), /readyz, /metrics, /api/v1/backups and
    /api/v1/status. SIGHUP reloads the config (an invalid one is rejected and the running one
    kept). SIGTERM stops taking work, aborts an upload in flight cleanly and exits 0.
    """
    overrides: dict[str, Any] = {
        **opt.etcd_overrides(endpoints, cacert, cert, key),
        **opt.store_overrides(store, s3_endpoint_url, cluster_name),
        "service.listen": listen,
        "service.log_format": log_format,
    }
    from etcdguard.service.daemon import Daemon

    with handle_errors():
        cfg = settings(ctx, overrides)
        setup_logging(cfg.service.log_format, state(ctx).verbose)
        daemon = Daemon(cfg, config_file=state(ctx).config_file,
                        overrides={k: v for k, v in overrides.items() if v is not None})
        code = daemon.run()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command."""
    app.command("serve", epilog=exit_codes_epilog())(serve)
