"""Shared helpers for the deployment-artifact tests: render the Helm chart offline, validate
manifests, read the Dockerfile, and parse command lines with etcdguard's own CLI parser.

The chart is rendered with helm-python-sdk (libhelm_c: Helm's Go SDK, no helm binary) and every
manifest is validated with kubernetes-validate's strict schemas.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "etcdguard"
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "config" / "systemd" / "etcdguard.service"

KUBE_VERSION = "1.30.0"
NAMESPACE = "etcd-backup"
RELEASE = "eg"
FULLNAME = f"{RELEASE}-etcdguard"
KEYS_SECRET = f"{FULLNAME}-keys"
CERT_DIR = "/etc/kubernetes/pki/etcd"
ENDPOINTS = ["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"]
RECIPIENT = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"

# What every install must set: the store and the etcd members.
REQUIRED: dict[str, Any] = {"config": {"store": "s3://my-etcd-backups/prod", "etcd": {"endpoints": ENDPOINTS}}}
SERVE_FULL: dict[str, Any] = {
    "mode": "serve",
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True},
    "s3": {"existingSecret": "etcd-backup-s3"},
    "serve": {"replicas": 3, "emergencyStore": {"enabled": True}},
    "verification": {"enabled": True, "identitySecret": {"name": "etcdguard-identity"}},
    "priorityClassName": "system-cluster-critical",
}
CRONJOB_FULL: dict[str, Any] = {
    "verification": {"enabled": True, "identitySecret": {"name": "etcdguard-identity"}, "dbSizeMiB": 4096},
    "keys": {"create": True, "recipients": [RECIPIENT],
             "signingKey": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
             "signingPub": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n"},
    "s3": {"existingSecret": "s3-write", "pruneSecret": "s3-delete", "verifySecret": "s3-verify"},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/etcd"}},
    "cronjob": {"timeZone": "Etc/UTC", "ttlSecondsAfterFinished": 86400},
    "prometheusRule": {"enabled": True},
    "image": {"registry": "registry.example.com", "digest": "sha256:" + "a" * 64},
}
NON_ROOT: dict[str, Any] = {
    "runAsUser": 10001, "runAsGroup": 10001, "kit": {"enabled": False},
    "etcdCerts": {"existingSecret": "etcd-client-certs"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {}, "serve-full": SERVE_FULL, "cronjob-full": CRONJOB_FULL, "non-root": NON_ROOT,
    "directory-certs": {"etcdCerts": {"mountDirectory": True}, "hostStore": {"enabled": True}},
    "serve-directory-certs": {"mode": "serve", "etcdCerts": {"mountDirectory": True}, "serve": {"replicas": 2}},
}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of values layers (later wins), as Helm merges -f files."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def values_for(name: str) -> dict[str, Any]:
    """A named value set with the required values filled in."""
    return merged(REQUIRED, VALUE_SETS[name])


def missing(what: str) -> None:
    """Skip, or fail under ETCDGUARD_REQUIRE_ALL=1 (CI installs everything)."""
    require.missing(what)


def etcdguard_cmd() -> list[str]:
    exe = shutil.which("etcdguard")
    return [exe] if exe else [sys.executable, "-c", "from etcdguard.cli.main import run; run()"]


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except (ImportError, OSError) as exc:  # OSError: libhelm_c.so would not load
        missing(f"helm-python-sdk unavailable: {exc}")
    return helm_python


@pytest.fixture(scope="module")
def kv() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed")
    return kubernetes_validate


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


# ---------------------------------------------------------------------------- rendering

def render_raw(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    return dict(chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE))


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt left out)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(chart, values).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def notes(chart: Any, values: dict[str, Any]) -> str:
    return next(v for k, v in render_raw(chart, values).items() if k.endswith("NOTES.txt"))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['kind'] for d in docs]}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(obj["spec"]["template"]["spec"])


def steps(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers in the order they run: init containers, then the main ones."""
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The snapshot CronJob or the service Deployment."""
    return next(d for d in docs if d["kind"] == "Deployment"
                or (d["kind"] == "CronJob" and d["metadata"]["name"] == FULLNAME))


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def rendered_config(docs: list[dict[str, Any]]) -> str:
    return str(one(docs, "ConfigMap")["data"]["etcdguard.yaml"])


# Loose schemas for the Prometheus Operator CRDs (kubernetes-validate ships only built-in kinds).
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name"], "properties": {"labels": _STR_MAP}},
            "spec": {
                "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"],
                                 "properties": {"matchLabels": _STR_MAP}},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["port"], "additionalProperties": False,
                        "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                       "interval": _DURATION, "scrapeTimeout": _DURATION}}},
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "interval": _DURATION, "rules": {
                        "type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["alert", "expr"], "additionalProperties": False,
                            "properties": {"alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                           "expr": {"type": "string", "minLength": 1}, "for": _DURATION,
                                           "labels": _STR_MAP, "annotations": _STR_MAP}}}}}}}},
        },
    },
}


# The chart's kubeVersion floor, the version the tests grew up with, and the newest schema known.
KUBE_VERSIONS = ["1.29.0", KUBE_VERSION, "latest"]


def validate_manifest(kv: Any, doc: dict[str, Any], version: str = KUBE_VERSION) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        import jsonschema

        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        return
    kv.validate(doc, kv.latest_version() if version == "latest" else version, strict=True)


def alerts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rendered alert rules by name."""
    rule = one(docs, "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


# ---------------------------------------------------------------------------- Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1]}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            op, _, args = pending.strip().partition(" ")
            out.append((op.upper(), args.strip()))
            pending = ""
    return out


def image_entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form)."""
    (entry,) = [json.loads(a) for op, a in dockerfile_instructions() if op == "ENTRYPOINT"]
    return list(entry)


# ---------------------------------------------------------------------------- the CLI parser

def cli_has(command: str) -> bool:
    """Whether etcdguard's CLI has this top-level command."""
    import typer.main

    from etcdguard.cli.main import app

    return command in typer.main.get_command(app).commands  # type: ignore[attr-defined]


def usage_error() -> type[Exception]:
    """The UsageError class of the click that Typer runs on (Typer may vendor its own)."""
    try:
        from typer._click.exceptions import UsageError  # type: ignore[import-not-found]
    except ImportError:
        from click.exceptions import UsageError
    return UsageError  # type: ignore[no-any-return]


def parse_cli(argv: list[str]) -> Any:
    """Parse an etcdguard command line with the CLI's own click parser, without running it.

    Returns the innermost context; raises :func:`usage_error` on an unknown command or option,
    a missing value or a bad choice.
    """
    import typer.main

    from etcdguard.cli.main import app

    command: Any = typer.main.get_command(app)
    ctx = command.make_context("etcdguard", list(argv))
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        name, sub, remaining = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, rest
        ctx = sub.make_context(name, remaining, parent=ctx)
        command = sub
    return ctx


def shell_commands(text: str, program: str) -> list[list[str]]:
    """Command lines of ``program`` in text: continuations joined, comments dropped, each
    `&&`/`;`/`|` segment separately, leading VAR=value assignments dropped."""
    out: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        if program not in line or line.strip().startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # prose with an apostrophe
            continue
        segment: list[str] = []
        for word in [*words, ";"]:
            if word not in ("&&", ";", "|", "||"):
                segment.append(word)
                continue
            # skip VAR=value assignments and crontab time fields before the program
            at = next((i for i, w in enumerate(segment) if Path(w).name == program), None)
            if at is not None and all(re.fullmatch(r"[0-9*/,-]+|[A-Z_][A-Z0-9_]*=\S*", w) for w in segment[:at]):
                out.append(segment[at + 1:])
            segment = []
    return out


def notes_commands(text: str, program: str) -> list[list[str]]:
    """Command lines of ``program`` in NOTES.txt (its commands are indented by 5 spaces)."""
    return shell_commands("\n".join(ln for ln in text.splitlines() if ln.startswith("     ")), program)


def markdown_commands(text: str, program: str) -> list[list[str]]:
    """Command lines of ``program`` in a Markdown page's sh and cron code blocks."""
    blocks = re.findall(r"```(?:sh|cron)\n(.*?)```", text, re.S)
    return shell_commands("\n".join(blocks), program)
