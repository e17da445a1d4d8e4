"""Alert rules in both modes: kube-state-metrics rules for the CronJobs, the service's metrics and
an absent() rule for serve; thresholds, groups and labels from values; runbook links that resolve."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.helm_chart import (  # noqa: F401  (fixtures)
    FULLNAME,
    NAMESPACE,
    ROOT,
    alerts,
    chart,
    helm,
    merged,
    one,
    render,
    values_for,
)

RUNBOOKS = ROOT / "docs" / "runbooks.md"
RULES_ON = {"prometheusRule": {"enabled": True}}


def _anchors() -> set[str]:
    """GitHub's heading anchors of docs/runbooks.md."""
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{2,4} (.+)$", RUNBOOKS.read_text(), re.M)}


def test_cronjob_mode_alerts_on_kube_state_metrics(chart: Any) -> None:
    rules = alerts(render(chart, merged(values_for("default"), RULES_ON)))
    assert set(rules) == {"EtcdguardSnapshotJobTooOld", "EtcdguardSnapshotJobFailed",
                          "EtcdguardSnapshotJobAbsent", "EtcdguardSnapshotJobSuspended"}
    sel = f'namespace="{NAMESPACE}", cronjob="{FULLNAME}"'
    too_old = rules["EtcdguardSnapshotJobTooOld"]["expr"]
    assert f"kube_cronjob_status_last_successful_time{{{sel}}}" in too_old and "> 26 * 3600" in too_old
    assert f"kube_cronjob_created{{{sel}}}" in too_old, "fires when no run ever succeeded"
    failed = rules["EtcdguardSnapshotJobFailed"]["expr"]
    assert "kube_job_status_failed" in failed and f'owner_name="{FULLNAME}"' in failed
    assert "kube_cronjob_status_last_successful_time" in failed, "a later success resolves it"
    assert rules["EtcdguardSnapshotJobAbsent"]["expr"] == f"absent(kube_cronjob_created{{{sel}}})"


def test_serve_mode_alerts_include_absent(chart: Any) -> None:
    rules = alerts(render(chart, values_for("serve-full")))
    assert rules["EtcdguardServiceAbsent"]["expr"] == (
        f'absent(etcdguard_service_loop_last_run_timestamp_seconds{{namespace="{NAMESPACE}"}})')
    assert rules["EtcdguardServiceAbsent"]["for"] == "10m"
    assert {"EtcdBackupTooOld", "EtcdQuorumLost", "EtcdguardVerifyJobFailed"} <= set(rules)
    assert not {"EtcdguardSnapshotJobFailed"} & set(rules)


def test_every_alert_links_its_runbook(chart: Any) -> None:
    anchors = _anchors()
    seen = set()
    for name in ("cronjob-full", "serve-full"):
        for alert, rule in alerts(render(chart, values_for(name))).items():
            url = rule["annotations"]["runbook_url"]
            base, _, anchor = url.partition("#")
            assert base == "https://github.com/etcdguard/etcdguard/blob/main/docs/runbooks.md"
            assert anchor == alert.lower() and anchor in anchors, f"docs/runbooks.md has no section {alert}"
            assert rule["annotations"]["summary"], alert
            seen.add(alert)
    assert len(seen) >= 26
    custom = alerts(render(chart, merged(values_for("serve-full"),
                                         {"prometheusRule": {"runbookBaseUrl": "https://wiki.example/etcd"}})))
    assert custom["EtcdQuorumLost"]["annotations"]["runbook_url"] == "https://wiki.example/etcd#etcdquorumlost"


def test_thresholds_groups_and_labels_come_from_values(chart: Any) -> None:
    values = merged(values_for("serve-full"), {"prometheusRule": {
        "thresholds": {"backupMaxAgeHours": 2, "verificationMaxAgeHours": 30, "absentFor": "5m",
                       "dbQuotaWarningPercent": 70, "raftLagEntries": 50, "certWarningDays": 14},
        "groups": {"backups": {"name": "my-backups", "interval": "1m"}},
        "alertLabels": {"team": "platform"}, "disabled": ["EtcdEvenVotingMembers"]}})
    rule = one(render(chart, values), "PrometheusRule")
    groups = {g["name"]: g for g in rule["spec"]["groups"]}
    assert groups["my-backups"]["interval"] == "1m" and "interval" not in groups["etcdguard-etcd"]
    rules = {r["alert"]: r for g in groups.values() for r in g["rules"]}
    assert rules["EtcdBackupTooOld"]["expr"].endswith("> 2 * 3600")
    assert rules["EtcdguardVerifyJobTooOld"]["expr"].endswith("> 30 * 3600")
    assert rules["EtcdguardServiceAbsent"]["for"] == "5m"
    assert rules["EtcdDatabaseNearQuota"]["expr"].endswith("> 0.70")
    assert rules["EtcdMemberLagging"]["expr"].endswith("> 50")
    assert rules["EtcdCertificateExpiringSoon"]["expr"].endswith("< 14")
    assert "EtcdEvenVotingMembers" not in rules
    assert all(r["labels"]["team"] == "platform" and r["labels"]["severity"] for r in rules.values())
    extra = {"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1)"}]}
    more = one(render(chart, merged(values_for("serve-full"), {"prometheusRule": {"additionalGroups": [extra]}})),
               "PrometheusRule")
    assert more["spec"]["groups"][-1] == extra


def _doc_alerts() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "monitoring.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text.split("## Alert rules", 1)[1], re.S)
    assert block, "docs/monitoring.md has no alert rules block"
    return [r for g in yaml.safe_load(block.group(1))["groups"] for r in g["rules"]]


def test_serve_rules_match_the_monitoring_docs(chart: Any) -> None:
    rendered = [r for r in alerts(render(chart, merged(values_for("default"), {"mode": "serve"}, RULES_ON))).values()]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        expr = " ".join(r["expr"].replace(f'{{namespace="{NAMESPACE}"}}', "").split())
        return r["alert"], expr, r.get("for"), r["labels"]["severity"]

    assert [key(r) for r in rendered] == [key(r) for r in _doc_alerts()]
    # Prometheus templates survive Helm's templating untouched.
    member_down = next(r for r in rendered if r["alert"] == "EtcdMemberDown")
    assert "{{ $labels.member }}" in member_down["annotations"]["summary"]


@pytest.mark.parametrize("mode", ["cronjob", "serve"])
def test_rules_are_off_unless_enabled(chart: Any, mode: str) -> None:
    docs = render(chart, merged(values_for("default"), {"mode": mode}))
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]
