"""The Helm chart renders, lints and validates across a matrix of values; its values schema is
strict and the values every install must choose (store, etcd members) have no default."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdguard.config import Settings, load_settings
from tests.support.helm_chart import (  # noqa: F401  (fixtures)
    CHART,
    CRONJOB_FULL,
    ENDPOINTS,
    FULLNAME,
    KUBE_VERSION,
    KUBE_VERSIONS,
    REQUIRED,
    SERVE_FULL,
    VALUE_SETS,
    chart,
    helm,
    kv,
    merged,
    one,
    pod_spec,
    render,
    render_raw,
    rendered_config,
    steps,
    validate_manifest,
    values_for,
    workload,
)

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize("name", ["default", "serve-full", "cronjob-full"])
def test_helm_lint(helm: Any, name: str) -> None:
    report = helm.lint(CHART, values_for(name), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_validates(chart: Any, kv: Any, name: str) -> None:
    values = values_for(name)
    docs = render(chart, values)
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "etcdguard"
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        for version in KUBE_VERSIONS:
            validate_manifest(kv, doc, version)
    kinds = sorted(d["kind"] for d in docs)
    if values.get("mode") == "serve":
        assert "Deployment" in kinds and "Service" in kinds
        assert ("PodDisruptionBudget" in kinds) is (values["serve"].get("replicas", 1) > 1)
    else:
        assert "CronJob" in kinds and "Deployment" not in kinds
    verification = bool(values.get("verification", {}).get("enabled"))
    assert kinds.count("CronJob") == (values.get("mode") != "serve") + verification
    assert ("PrometheusRule" in kinds) is bool(values.get("prometheusRule", {}).get("enabled"))


def test_validation_is_not_vacuous(chart: Any, kv: Any) -> None:
    """The strict schemas do catch a broken manifest (a misspelt field, a wrong type)."""
    import jsonschema

    cron = one(render(chart, REQUIRED), "CronJob")
    typo = copy.deepcopy(cron)
    typo["spec"]["concurrencyPolicyy"] = "Forbid"
    wrong_type = copy.deepcopy(cron)
    pod_spec(wrong_type)["containers"][0]["volumeMounts"][0]["readOnly"] = "yes"
    for broken in (typo, wrong_type):
        with pytest.raises(kv.ValidationError):
            validate_manifest(kv, broken)
    rule = one(render(chart, values_for("serve-full")), "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(kv, rule)


def test_no_default_bucket_and_every_member_required(chart: Any, helm: Any) -> None:
    assert "store" not in VALUES["config"], "S3 bucket names are global: no default bucket"
    assert VALUES["config"]["etcd"]["endpoints"] == []
    with pytest.raises(helm.HelmError, match=r"config\.store is required: your own bucket"):
        render_raw(chart, {"config": {"etcd": {"endpoints": ENDPOINTS}}})
    with pytest.raises(helm.HelmError, match=r"config\.etcd\.endpoints is required: the client URL of every"):
        render_raw(chart, {"config": {"store": "s3://mine/prod"}})
    # A host store stands in for the bucket; with both set, it renders.
    render_raw(chart, {"hostStore": {"enabled": True}, "config": {"etcd": {"endpoints": ENDPOINTS}}})
    settings = Settings.model_validate(yaml.safe_load(rendered_config(render(chart, REQUIRED))))
    assert settings.etcd.endpoints == ENDPOINTS
    assert settings.store is not None and settings.store.type == "s3" and settings.store.bucket == "my-etcd-backups"


@pytest.mark.parametrize("typo", [
    {"s3": {"existingSecrte": "creds"}},
    {"etcdCerts": {"existingSecrets": "certs"}},
    {"mdoe": "serve"},
    {"mode": "cron"},
    {"cronjob": {"prune": {"enabeld": False}}},
    {"verification": {"identitySecret": {"nmae": "x"}}},
    {"serve": {"podDisruptionBudget": {"minAvailable": 1}}},
    {"prometheusRule": {"thresholds": {"backupMaxAge": 12}}},
    {"tolerations": [{"key": "a", "opertor": "Exists"}]},
    {"resources": {"limit": {"memory": "1Gi"}}},
    {"containerSecurityContext": {"readOnlyRootFileSystem": True}},
    {"config": {"etcd": {"endpoint": ["https://10.0.0.1:2379"]}}},
    {"config": {"retention": {"keep": 3}}},
    {"config": {"store": {"type": "s3", "bucket": "b", "secret_access_key": "in a ConfigMap?"}}},
    {"config": {"etcd": {"password": "in a ConfigMap?"}}},
    {"config": {"verify": {"sandbox": "vm"}}},
    {"image": {"digest": "latest"}},
    {"cronjob": {"failJobExitCodes": ["3"]}},
    {"keys": {"recipients": ["not-a-recipient"]}},
], ids=lambda v: json.dumps(v)[:60])
def test_a_typo_in_values_fails_to_render(chart: Any, helm: Any, typo: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render_raw(chart, merged(REQUIRED, typo))


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            out.append((path, schema))
        for key, sub in schema.items():
            if key in ("properties", "definitions"):
                for name, child in sub.items():
                    out += _objects(child, f"{path}.{name}")
            elif key in ("items", "additionalProperties") and isinstance(sub, dict):
                out += _objects(sub, f"{path}[]")
            elif key in ("oneOf", "anyOf", "allOf"):
                for i, child in enumerate(sub):
                    out += _objects(child, f"{path}<{i}>")
    return out


def test_schema_is_strict_at_every_level() -> None:
    """Every object in values.schema.json either lists its properties with additionalProperties:
    false, or is a map of one declared type (labels, annotations, node selector); every value
    has a type, enum, const or reference."""
    for path, obj in _objects(SCHEMA):
        if "properties" in obj:
            assert obj.get("additionalProperties") is False, path
            for key, prop in obj["properties"].items():
                assert set(prop) & {"type", "enum", "const", "$ref", "oneOf", "anyOf", "allOf"}, f"{path}.{key}"
        elif path != ".global":
            assert isinstance(obj.get("additionalProperties"), dict), f"{path}: an open object"


def test_schema_covers_every_value() -> None:
    """Every key in values.yaml is described by the schema (so nothing silently renders as-is)."""
    def walk(values: Any, schema: dict[str, Any], path: str) -> None:
        if "$ref" in schema:
            schema = SCHEMA["definitions"][schema["$ref"].split("/")[-1]]
        if isinstance(values, dict) and "properties" in schema:
            for key, value in values.items():
                assert key in schema["properties"], f"{path}.{key} is not in values.schema.json"
                walk(value, schema["properties"][key], f"{path}.{key}")

    walk(VALUES, SCHEMA, "")


def test_config_schema_knows_only_real_config_keys() -> None:
    """Every etcdguard config key the chart's schema admits is one etcdguard accepts (secrets
    excluded: they do not belong in a ConfigMap)."""
    model = Settings.model_json_schema()
    defs = model["$defs"]

    def keys_of(schema: dict[str, Any]) -> set[str]:
        if "$ref" in schema:
            schema = defs[schema["$ref"].split("/")[-1]]
        found = set(schema.get("properties", {}))
        for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
            found |= keys_of(alt)
        return found

    config = SCHEMA["properties"]["config"]
    assert set(config["properties"]) <= set(model["properties"])
    for section, schema in config["properties"].items():
        allowed = keys_of(schema)
        real = keys_of(model["properties"][section])
        assert allowed <= real, (section, allowed - real)
    assert "password" not in config["properties"]["etcd"]["properties"]
    for store in config["properties"]["store"]["oneOf"]:
        assert not {"secret_access_key", "session_token", "access_key_id"} & set(store.get("properties", {}))


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_configmap_is_a_valid_etcdguard_config(chart: Any, tmp_path: Path, name: str) -> None:
    values = values_for(name)
    docs = render(chart, values)
    path = tmp_path / "etcdguard.yaml"
    path.write_text(rendered_config(docs))
    settings = load_settings(path, environ={})
    assert settings.verify.sandbox == "process"
    assert settings.etcd.endpoints == ENDPOINTS
    pod = pod_spec(workload(docs))
    mounted = [m["mountPath"] for c in steps(pod) for m in c["volumeMounts"]]

    def is_mounted(p: Path | None) -> bool:
        return p is not None and any(str(p) == m or str(p).startswith(m.rstrip("/") + "/") for m in mounted)

    for cert in (settings.etcd.cacert, settings.etcd.cert, settings.etcd.key):
        assert cert is None or is_mounted(cert), cert
    # Key files come per step from the environment, never from the shared config.
    assert settings.encryption.recipients_file is None and settings.signing.key_file is None
    assert settings.encryption.identity_file is None
    if values.get("hostStore", {}).get("enabled"):
        assert settings.store is not None and settings.store.type == "local" and is_mounted(settings.store.path)
    if values.get("mode") == "serve":
        assert settings.service.verify_after_snapshot is False, "verification has its own CronJob"
        # The service saves the kit from the directories the pod mounts read-only.
        kit = values.get("kit", {}).get("enabled", True)
        assert settings.kit.enabled is kit
        assert not kit or (is_mounted(settings.kit.pki_dir) and is_mounted(settings.kit.manifests_dir))
        if values["serve"].get("emergencyStore", {}).get("enabled"):
            assert is_mounted(settings.service.emergency_local_store)
    else:
        assert settings.kit.enabled is False, "the CronJob's kit step saves the kit, not the snapshot step"


def test_user_config_wins_over_chart_defaults(chart: Any, tmp_path: Path) -> None:
    values = {"config": {"etcd": {"endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
                                  "cacert": "/custom/ca.crt"},
                         "store": {"type": "s3", "bucket": "b", "prefix": "p", "region": "eu-west-1"},
                         "backup": {"cluster_name": "prod"}, "verify": {"sandbox": "docker"}}}
    path = tmp_path / "etcdguard.yaml"
    path.write_text(rendered_config(render(chart, values)))
    settings = load_settings(path, environ={})
    assert settings.etcd.endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert settings.etcd.cacert == Path("/custom/ca.crt")
    assert settings.etcd.key == Path("/etc/kubernetes/pki/etcd/healthcheck-client.key")
    assert settings.backup.cluster_name == "prod" and settings.verify.sandbox == "docker"
    assert settings.store is not None and settings.store.type == "s3" and settings.store.region == "eu-west-1"


def test_image_reference_from_registry_repository_tag_digest(chart: Any) -> None:
    def images(values: dict[str, Any]) -> set[str]:
        return {c["image"] for d in render(chart, merged(REQUIRED, values)) if d["kind"] in ("CronJob", "Deployment")
                for c in steps(pod_spec(d))}

    assert images({}) == {"etcdguard:0.1.0"}
    assert images({"image": {"registry": "registry.example.com/", "tag": "1.2.3"}}) == {
        "registry.example.com/etcdguard:1.2.3"}
    digest = "sha256:" + "a" * 64
    assert images({"image": {"registry": "registry.example.com", "tag": "1.2.3", "digest": digest},
                   "verification": CRONJOB_FULL["verification"]}) == {f"registry.example.com/etcdguard@{digest}"}


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0", "the oldest version the manifests are validated for"
    assert meta["home"].startswith("https://") and meta["sources"] and meta["icon"].startswith("https://")
    assert meta["maintainers"] and all(m["name"] for m in meta["maintainers"])
    assert meta["icon"].endswith("docs/icon.svg") and (CHART.parents[1] / "docs" / "icon.svg").exists()


def test_chart_refuses_values_that_cannot_work(chart: Any, helm: Any) -> None:
    with pytest.raises(helm.HelmError, match="identitySecret"):
        render_raw(chart, merged(REQUIRED, {"verification": {"enabled": True}}))
    with pytest.raises(helm.HelmError, match="mutually exclusive"):
        render_raw(chart, merged(REQUIRED, {"keys": {"create": True, "existingSecret": "x"}}))
    with pytest.raises(helm.HelmError, match="signingPub"):
        recipients = CRONJOB_FULL["keys"]["recipients"]
        render_raw(chart, merged(REQUIRED, {"keys": {"create": True, "recipients": recipients, "signingKey": "k"}}))


def test_names_fit_kubernetes_limits(chart: Any) -> None:
    """CronJob names stay within 52 characters (the controller appends an 11-character suffix)."""
    long = merged(values_for("cronjob-full"), {"fullnameOverride": "x" * 80})
    for doc in render(chart, long):
        if doc["kind"] == "CronJob":
            assert len(doc["metadata"]["name"]) <= 52, doc["metadata"]["name"]
    assert FULLNAME == "eg-etcdguard"


def test_kubernetes_definitions_are_current() -> None:
    """The Kubernetes types the schema references are the ones kubernetes-validate knows (run
    `python3 -m tests.support.chart_schema` after referencing another type)."""
    from tests.support.chart_schema import kubernetes_definitions, referenced_roots

    assert SCHEMA["definitions"] == kubernetes_definitions(referenced_roots(SCHEMA))
