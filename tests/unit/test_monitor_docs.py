"""docs/monitoring.md stays true: every metric listed, alert rules parse and name real metrics."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from etcdguard.monitor.certs import CertExpiry
from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.service.metrics import ServiceMetrics
from tests.unit.test_monitor_fakes import cluster, healthy3, mem

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def exposed_names() -> set[str]:
    m = EtcdGuardMetrics()
    m.update_from_cluster(cluster(*healthy3().members, mem("l1", learner=True, alarms=("NOSPACE",))))
    m.record_backup(True, 1.0, plain_size_bytes=1, stored_size_bytes=1)
    m.record_verification(True)
    m.set_certificates([CertExpiry("/etc/kubernetes/pki/ca.crt", "pki", "kubernetes",
                                   datetime.now(timezone.utc) + timedelta(days=90), is_ca=True)])
    ServiceMetrics(m.registry).heartbeat(leader=True)
    return {s.name for family in m.registry.collect() for s in family.samples}


def test_every_metric_family_is_documented() -> None:
    text = DOC.read_text()
    for family in EtcdGuardMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` | {family.type} |" in text, name


def test_alert_rules_parse_and_use_real_metrics() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    rules = [r for g in yaml.safe_load(block.group(1))["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    names = exposed_names()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule)
        for metric in re.findall(r"etcdguard_[a-z_]+", rule["expr"]):
            assert metric in names, (rule["alert"], metric)
