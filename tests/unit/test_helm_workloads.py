"""The chart's pods: what runs where, what each step may see, and how it stops."""

from __future__ import annotations

from typing import Any

from tests.support.helm_chart import (  # noqa: F401  (fixtures)
    CERT_DIR,
    FULLNAME,
    KEYS_SECRET,
    REQUIRED,
    VALUE_SETS,
    chart,
    cli_has,
    env_of,
    helm,
    merged,
    one,
    parse_cli,
    pod_spec,
    render,
    steps,
    values_for,
    workload,
)

VERIFY = f"{FULLNAME}-verify"


def _by_name(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in steps(pod)}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def test_cronjob_runs_snapshot_kit_prune_on_control_plane_nodes(chart: Any) -> None:
    cron = one(render(chart, REQUIRED), "CronJob")
    spec = cron["spec"]
    assert spec["schedule"] == "0 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cron)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert pod["automountServiceAccountToken"] is False
    # One after another (init containers): a failed snapshot is never followed by kit or prune.
    assert [(c["name"], c["args"]) for c in steps(pod)] == [
        ("snapshot", ["snapshot"]),
        ("kit", ["kit", "save", "--pki-dir", "/etc/kubernetes/pki", "--manifests-dir", "/etc/kubernetes/manifests"]),
        ("prune", ["backups", "prune", "--yes"]),
    ]
    # No command: the image's entrypoint (tini -g -- etcdguard) runs the args.
    assert all("command" not in c for c in steps(pod))
    alone = pod_spec(one(render(chart, merged(REQUIRED, {"cronjob": {"prune": {"enabled": False}},
                                                          "kit": {"enabled": False}})), "CronJob"))
    assert "initContainers" not in alone and [c["args"] for c in alone["containers"]] == [["snapshot"]]


def test_cronjob_stops_cleanly_and_does_not_retry_permanent_failures(chart: Any) -> None:
    job = one(render(chart, REQUIRED), "CronJob")["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never", "podFailurePolicy needs restartPolicy Never"
    assert pod["terminationGracePeriodSeconds"] == 120
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3, 6, 7]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600
    custom = one(render(chart, merged(REQUIRED, {"cronjob": {"terminationGracePeriodSeconds": 300,
                                                             "failJobExitCodes": [3, 6, 7, 10]}})), "CronJob")
    custom_job = custom["spec"]["jobTemplate"]["spec"]
    assert custom_job["template"]["spec"]["terminationGracePeriodSeconds"] == 300
    assert custom_job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3, 6, 7, 10]


def test_each_step_sees_only_what_it_needs(chart: Any) -> None:
    docs = render(chart, values_for("cronjob-full"))
    pod = pod_spec(one(docs, "CronJob", FULLNAME))
    by = _by_name(pod)
    keys = {"/etc/etcdguard/recipients", "/etc/etcdguard/signing-key", "/etc/etcdguard/signing-pub",
            "/etc/etcdguard/identity"}
    seen = {name: keys & set(_mounts(c)) for name, c in by.items()}
    assert seen == {
        "snapshot": {"/etc/etcdguard/recipients", "/etc/etcdguard/signing-key"},
        "kit": {"/etc/etcdguard/recipients", "/etc/etcdguard/signing-key", "/etc/etcdguard/signing-pub"},
        "prune": {"/etc/etcdguard/signing-pub"},  # prune never holds the signing key
    }
    env = {name: env_of(c) for name, c in by.items()}
    assert env["snapshot"]["ETCDGUARD_SIGNING_KEY"] == "/etc/etcdguard/signing-key/signing.key"
    assert env["snapshot"]["ETCDGUARD_RECIPIENTS_FILE"] == "/etc/etcdguard/recipients/recipient.txt"
    assert "ETCDGUARD_SIGNING_KEY" not in env["prune"]
    assert env["prune"]["ETCDGUARD_SIGNING_PUBLIC_KEYS"] == "/etc/etcdguard/signing-pub/signing.pub"
    # Separate S3 credentials: write for snapshot and kit, delete for prune.
    for name, secret in (("snapshot", "s3-write"), ("kit", "s3-write"), ("prune", "s3-delete")):
        assert env[name]["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == secret, name
    # Each key volume holds exactly one file of the keys Secret.
    for vol in (v for v in pod["volumes"] if v["name"].startswith("key-")):
        assert vol["secret"]["secretName"] == KEYS_SECRET and len(vol["secret"]["items"]) == 1
    # Without a prune Secret, prune uses the write credentials.
    plain = pod_spec(one(render(chart, merged(REQUIRED, {"s3": {"existingSecret": "s3"}})), "CronJob"))
    assert env_of(_by_name(plain)["prune"])["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "s3"


def test_etcd_certs_and_kit_come_read_only_from_the_host(chart: Any) -> None:
    pod = pod_spec(one(render(chart, REQUIRED), "CronJob"))
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    by = _by_name(pod)
    snapshot_host = {m["name"] for m in by["snapshot"]["volumeMounts"] if m["name"] in host}
    assert sorted(host[n]["path"] for n in snapshot_host) == [
        f"{CERT_DIR}/ca.crt", f"{CERT_DIR}/healthcheck-client.crt", f"{CERT_DIR}/healthcheck-client.key"]
    # The kit step reads the control-plane directories, read-only; nothing else sees them.
    kit = _mounts(by["kit"])
    assert kit["/etc/kubernetes/pki"]["readOnly"] is True and kit["/etc/kubernetes/manifests"]["readOnly"] is True
    assert {host[kit[p]["name"]]["path"] for p in ("/etc/kubernetes/pki", "/etc/kubernetes/manifests")} == {
        "/etc/kubernetes/pki", "/etc/kubernetes/manifests"}
    others = set(_mounts(by["snapshot"])) | set(_mounts(by["prune"]))
    assert not {"/etc/kubernetes/pki", "/etc/kubernetes/manifests"} & others
    for c in steps(pod):
        for m in c["volumeMounts"]:
            if m["name"] in host:
                assert m.get("readOnly") is True, (c["name"], m)
    assert not {m["name"] for m in by["prune"]["volumeMounts"]} & set(host), "prune reads nothing from the host"
    extra = pod_spec(one(render(chart, merged(REQUIRED, {"kit": {"extraHostPaths": ["/etc/kubernetes/enc"]}})),
                         "CronJob"))
    assert _mounts(_by_name(extra)["kit"])["/etc/kubernetes/enc"]["readOnly"] is True


def test_verification_runs_in_its_own_cronjob_off_the_control_plane(chart: Any) -> None:
    for name in ("cronjob-full", "serve-full"):
        docs = render(chart, values_for(name))
        cron = one(docs, "CronJob", VERIFY)
        job = cron["spec"]["jobTemplate"]["spec"]
        pod = pod_spec(cron)
        assert pod["hostNetwork"] is False
        assert "nodeSelector" not in pod and "tolerations" not in pod, "not pinned to control-plane nodes"
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
        assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3, 6, 7]
        assert pod["restartPolicy"] == "Never"
        (c,) = pod["containers"]
        assert c["args"][:4] == ["verify", "--latest", "--sandbox", "process"]
        assert "ports" not in c, "the sandbox serves only etcdguard: no port"
        # Scratch space sized from the db: 2 x dbSizeMiB + 512 MiB, as the emptyDir limit and the
        # container's ephemeral-storage request and limit.
        size = f"{2 * values_for(name)['verification'].get('dbSizeMiB', 2048) + 512}Mi"
        assert c["resources"]["limits"]["ephemeral-storage"] == size
        assert c["resources"]["requests"]["ephemeral-storage"] == size
        assert c["resources"]["limits"]["memory"] == "2Gi"
        (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert tmp["emptyDir"] == {"sizeLimit": size}
        # The identity and the signing keys; no etcd certificates, no host paths, no recipients.
        mounts = _mounts(c)
        assert {"/etc/etcdguard/identity", "/etc/etcdguard/signing-key", "/etc/etcdguard/signing-pub"} <= set(mounts)
        assert "/etc/etcdguard/recipients" not in mounts
        assert not [v for v in pod["volumes"] if "hostPath" in v]
        env = env_of(c)
        assert env["ETCDGUARD_IDENTITY"] == "/etc/etcdguard/identity/identity.age"
        assert env["ETCDGUARD_SIGNING_KEY"] == "/etc/etcdguard/signing-key/signing.key"
        assert parse_cli(c["args"]).params["sandbox"] == "process"
        # Nothing else holds the identity.
        for other in (d for d in docs if d["kind"] in ("CronJob", "Deployment") and d is not cron):
            for s in steps(pod_spec(other)):
                assert "/etc/etcdguard/identity" not in _mounts(s) and "ETCDGUARD_IDENTITY" not in env_of(s)
    docs = render(chart, values_for("cronjob-full"))
    verify = pod_spec(one(docs, "CronJob", VERIFY))["containers"][0]
    assert env_of(verify)["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "s3-verify"


def test_no_identity_in_the_cluster_by_default(chart: Any) -> None:
    for values in (REQUIRED, merged(REQUIRED, {"mode": "serve"})):
        docs = render(chart, values)
        assert [d["metadata"]["name"] for d in docs if d["kind"] == "CronJob"] in ([FULLNAME], [])
        for c in steps(pod_spec(workload(docs))):
            assert "/etc/etcdguard/identity" not in _mounts(c) and "ETCDGUARD_IDENTITY" not in env_of(c)
        assert not [d for d in docs if d["kind"] == "Secret"], "no Secret unless keys.create"


def test_keys_secret_holds_the_public_and_signing_keys_only(chart: Any) -> None:
    secret = one(render(chart, values_for("cronjob-full")), "Secret")
    assert set(secret["stringData"]) == {"recipient.txt", "signing.key", "signing.pub"}


def test_serve_listens_on_every_address_family(chart: Any) -> None:
    docs = render(chart, values_for("serve-full"))
    pod = pod_spec(one(docs, "Deployment"))
    (c,) = pod["containers"]
    assert c["args"] == ["serve", "--listen", "[::]:9479"], "no $(POD_IP):port (breaks on IPv6)"
    assert "POD_IP" not in env_of(c)
    assert parse_cli(c["args"]).params["listen"] == "[::]:9479"
    assert c["ports"] == [{"name": "http", "containerPort": 9479, "protocol": "TCP"}]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["priorityClassName"] == "system-cluster-critical"
    custom = pod_spec(one(render(chart, merged(values_for("serve-full"), {"serve": {"listen": "0.0.0.0:9479"}})),
                          "Deployment"))
    assert custom["containers"][0]["args"][2] == "0.0.0.0:9479"


def test_serve_mode_deployment_service_monitor_and_pdb(chart: Any) -> None:
    docs = render(chart, values_for("serve-full"))
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    pod = pod_spec(dep)
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env_of(c)["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"] == {
        "name": "etcd-backup-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    mounts = _mounts(c)
    assert mounts["/etc/kubernetes/pki"]["readOnly"] is True and mounts["/etc/kubernetes/manifests"]["readOnly"] is True
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = one(docs, "Service")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    mon = one(docs, "ServiceMonitor")
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert mon["spec"]["endpoints"][0]["port"] == "http"
    single = render(chart, merged(REQUIRED, {"mode": "serve"}))
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"], "no PDB for a single replica"


def test_pods_are_locked_down(chart: Any) -> None:
    for name in VALUE_SETS:
        values = values_for(name)
        for doc in (d for d in render(chart, values) if d["kind"] in ("CronJob", "Deployment")):
            pod = pod_spec(doc)
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in steps(pod):
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
                assert "/tmp" in _mounts(c), "writable /tmp"
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env["ETCDGUARD_STATE_DIR"].startswith("/tmp/"), "step journals on the writable /tmp"
                assert c["resources"]["limits"]["ephemeral-storage"]
            (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
            assert tmp["emptyDir"]["sizeLimit"], "no unbounded emptyDir"
        if values.get("runAsUser"):
            ctx = pod_spec(workload(render(chart, values)))["securityContext"]
            assert ctx["runAsUser"] == 10001 and ctx["runAsNonRoot"] is True and ctx["fsGroup"] == 10001


def test_every_container_command_parses_with_the_cli(chart: Any) -> None:
    """Each rendered container's args are accepted by the real CLI parser (a renamed flag fails
    here). `kit save` is checked once the kit command exists."""
    seen: set[tuple[str, ...]] = set()
    for name in VALUE_SETS:
        for doc in (d for d in render(chart, values_for(name)) if d["kind"] in ("CronJob", "Deployment")):
            for c in steps(pod_spec(doc)):
                args = tuple(c["args"])
                if args in seen:
                    continue
                seen.add(args)
                if args[0] == "kit" and not cli_has("kit"):
                    continue
                parse_cli(list(args))
    assert {a[0] for a in seen} >= {"snapshot", "kit", "backups", "verify", "serve"}


def test_serve_api_token_from_a_secret(chart: Any, tmp_path: Any) -> None:
    from etcdguard.config import load_settings
    from tests.support.helm_chart import rendered_config

    values = merged(values_for("serve-full"), {"serve": {"apiToken": {"existingSecret": "api", "key": "t"}}})
    docs = render(chart, values)
    pod = pod_spec(one(docs, "Deployment"))
    (vol,) = [v for v in pod["volumes"] if v["name"] == "api-token"]
    assert vol["secret"] == {"secretName": "api", "defaultMode": 0o440, "items": [{"key": "t", "path": "token"}]}
    assert _mounts(pod["containers"][0])["/etc/etcdguard/api-token"]["readOnly"] is True
    path = tmp_path / "etcdguard.yaml"
    path.write_text(rendered_config(docs))
    assert str(load_settings(path, environ={}).service.api_token_file) == "/etc/etcdguard/api-token/token"
    for cron in (d for d in docs if d["kind"] == "CronJob"):
        assert not [v for v in pod_spec(cron)["volumes"] if v["name"] == "api-token"]
    plain = pod_spec(one(render(chart, values_for("serve-full")), "Deployment"))
    assert not [v for v in plain["volumes"] if v["name"] == "api-token"]
