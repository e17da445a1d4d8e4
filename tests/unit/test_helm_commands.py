"""Every command the chart's NOTES.txt and docs/deploy.md tell a user to run is one that works:
etcdguard command lines parse with the CLI's own parser, kubectl commands name objects the chart
renders, and the keys-Secret instructions appear only when the user has no Secret yet."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.helm_chart import (  # noqa: F401  (fixtures)
    CRONJOB_FULL,
    FULLNAME,
    KEYS_SECRET,
    NAMESPACE,
    REQUIRED,
    ROOT,
    VALUE_SETS,
    chart,
    cli_has,
    helm,
    markdown_commands,
    merged,
    notes,
    notes_commands,
    one,
    parse_cli,
    pod_spec,
    render,
    usage_error,
    values_for,
)

DEPLOY = ROOT / "docs" / "deploy.md"


def _kubectl(text: str) -> list[list[str]]:
    return notes_commands(text, "kubectl")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_notes_etcdguard_commands_parse(chart: Any, name: str) -> None:
    text = notes(chart, values_for(name))
    for argv in notes_commands(text, "etcdguard"):
        parse_cli(argv)


def test_notes_verify_command_has_everything_verify_needs(chart: Any) -> None:
    """Trusted signing key, verdict signing key, identity, store and cluster name: nothing that
    would make verify exit 3."""
    values = merged(REQUIRED, {"config": {"backup": {"cluster_name": "prod"},
                                          "store": {"type": "s3", "bucket": "b", "prefix": "p/q",
                                                    "endpoint_url": "https://minio.example:9000"}}})
    (verify,) = [a for a in notes_commands(notes(chart, values), "etcdguard") if a[0] == "verify"]
    params = parse_cli(verify).params
    assert params["unverified"] is True and params["sandbox"] == "process"
    assert str(params["identity"]) == "keys/identity.age" and str(params["signing_key"]) == "keys/signing.key"
    assert [str(p) for p in params["signing_pub"]] == ["keys/signing.pub"]
    assert params["store"] == "s3://b/p/q" and params["s3_endpoint_url"] == "https://minio.example:9000"
    assert params["cluster_name"] == "prod"
    (plain,) = [a for a in notes_commands(notes(chart, REQUIRED), "etcdguard") if a[0] == "verify"]
    assert parse_cli(plain).params["store"] == "s3://my-etcd-backups/prod"
    # With verification in the cluster, NOTES point at the verification CronJob instead.
    text = notes(chart, values_for("cronjob-full"))
    assert not [a for a in notes_commands(text, "etcdguard") if a[0] == "verify"]
    assert f"create job --from=cronjob/{FULLNAME}-verify" in text


def test_notes_keys_secret_instructions_only_without_a_secret(chart: Any) -> None:
    text = notes(chart, REQUIRED)
    (create,) = [a for a in _kubectl(text) if a[:3] == ["-n", NAMESPACE, "create"]
                 and "secret" in a]
    assert create[3:6] == ["secret", "generic", KEYS_SECRET]
    files = {a.split("=", 1)[1].split("=")[0] for a in create if a.startswith("--from-file=")}
    assert files == {"recipient.txt", "signing.key", "signing.pub"}, "every key file a step mounts"
    assert "OFFLINE" in text
    for values in (merged(REQUIRED, {"keys": {"existingSecret": "mine"}}), values_for("cronjob-full")):
        text = notes(chart, values)
        assert "create secret" not in text and "keys generate" not in text


def test_notes_kubectl_commands_name_rendered_objects(chart: Any) -> None:
    for name in ("default", "serve-full", "cronjob-full"):
        values = values_for(name)
        docs = render(chart, values)
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        for argv in _kubectl(notes(chart, values)):
            assert argv[:2] == ["-n", NAMESPACE], argv
            joined = " ".join(argv)
            if m := re.search(r"--from=cronjob/(\S+)", joined):
                assert ("CronJob", m.group(1)) in names, argv
            if m := re.search(r"port-forward svc/(\S+) (\d+):(\d+)", joined):
                svc = one(docs, "Service", m.group(1))
                assert int(m.group(3)) == svc["spec"]["ports"][0]["port"], argv
                # port-forward reaches the pod's loopback: the service must listen there too.
                listen = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"][2]
                assert listen.startswith(("[::]:", "0.0.0.0:")), listen
            if m := re.search(r"logs -f job/(\S+) -c (\S+)", joined):
                cron = next(d for d in docs if d["kind"] == "CronJob" and m.group(1).startswith(d["metadata"]["name"]))
                pod = pod_spec(cron)
                assert m.group(2) in {c["name"] for c in pod.get("initContainers", []) + pod["containers"]}


def _deploy_commands() -> list[list[str]]:
    return markdown_commands(DEPLOY.read_text(), "etcdguard")


def test_deploy_md_etcdguard_commands_parse() -> None:
    commands = _deploy_commands()
    assert len(commands) >= 6
    for argv in commands:
        if argv and argv[0] == "kit" and not cli_has("kit"):
            continue
        try:
            parse_cli(argv)
        except usage_error() as exc:
            pytest.fail(f"docs/deploy.md: etcdguard {' '.join(argv)}: {exc}")
    verify = [a for a in commands if "verify" in a]
    assert verify and all("--signing-pub" in a and "--signing-key" in a for a in verify)


def test_parse_is_not_vacuous() -> None:
    for bad in (["verify", "--latset"], ["snapshots"], ["serve", "--listen"], ["verify", "--output", "xml"]):
        with pytest.raises(usage_error()):
            parse_cli(bad)


def test_deploy_md_values_examples_render(chart: Any) -> None:
    """Every values example in docs/deploy.md renders (with the required values where the
    example leaves them out) and its keys pass the strict schema."""
    import yaml

    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOY.read_text(), re.S)
    assert len(blocks) >= 5
    for block in blocks:
        values = yaml.safe_load(block)
        if not isinstance(values, dict):
            continue
        if values.get("verification", {}).get("enabled"):
            values = merged(values_for("cronjob-full"), values)
        render(chart, merged(REQUIRED, {"keys": CRONJOB_FULL["keys"]} if "keys" not in values else {}, values))


def test_deploy_md_kubectl_commands_match_the_chart(chart: Any) -> None:
    text = DEPLOY.read_text()
    (keys,) = [a for a in markdown_commands(text, "kubectl") if "etcdguard-keys" in a]
    assert {a.split("=", 1)[1].split("=")[0] for a in keys if a.startswith("--from-file=")} == {
        "recipient.txt", "signing.key", "signing.pub"}
