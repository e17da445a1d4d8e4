"""Certificate expiry: thresholds on real certificates that lapse in 5, 20 and 400 days."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdguard.config import MonitorConfig, load_settings
from etcdguard.kit.expiry import certificates_for, from_kit, local_certificates, merge
from etcdguard.monitor.certs import check_certificates
from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.monitor.model import Severity
from etcdguard.monitor.report import run_checks
from tests.support.kubeadm import KubeadmNode, make_kubeadm_node
from tests.unit.test_monitor_fakes import healthy3


def node_with(tmp_path: Path, server_days: int) -> KubeadmNode:
    return make_kubeadm_node(tmp_path / f"n{server_days}", days={"etcd/server": server_days})


@pytest.mark.parametrize(("days", "severity"), [(5, Severity.CRITICAL), (20, Severity.WARNING),
                                                (400, Severity.OK)])
def test_thresholds(tmp_path: Path, days: int, severity: Severity) -> None:
    node = make_kubeadm_node(tmp_path / "n", leaf_days=400, ca_days=4000, days={"etcd/server": days})
    settings = load_settings(None, {"kit.pki_dir": node.pki_dir}, environ={})
    certs = certificates_for(settings)
    assert {c.source for c in certs} == {"pki"}
    assert str(node.etcd_pki_dir / "server.crt") in {c.path for c in certs}
    result = check_certificates(certs, settings.monitor)
    assert result.severity is severity, result.summary
    if severity is not Severity.OK:
        assert "server.crt" in result.summary and "kubeadm certs renew" in result.advice


def test_thresholds_are_configurable_and_expired_is_critical(tmp_path: Path) -> None:
    node = node_with(tmp_path, 20)
    certs = local_certificates(load_settings(None, {"kit.pki_dir": node.pki_dir}, environ={}))
    lenient = MonitorConfig(cert_warning_days=10, cert_critical_days=3)
    assert check_certificates(certs, lenient).severity is Severity.OK
    strict = MonitorConfig(cert_warning_days=60, cert_critical_days=21)
    assert check_certificates(certs, strict).severity is Severity.CRITICAL
    expired = make_kubeadm_node(tmp_path / "old", days={"etcd/peer": -3})
    result = check_certificates(local_certificates(load_settings(
        None, {"kit.pki_dir": expired.pki_dir}, environ={})), MonitorConfig())
    assert result.severity is Severity.CRITICAL and "expired" in result.summary


def test_etcd_tls_files_and_kit_records_are_read(tmp_path: Path) -> None:
    node = node_with(tmp_path, 5)
    cacert, cert, _ = node.etcd_client_tls
    settings = load_settings(None, {"etcd.cert": cert, "etcd.cacert": cacert,
                                    "kit.pki_dir": tmp_path / "none"}, environ={})
    local = local_certificates(settings)
    assert [c.source for c in local] == ["etcd-tls", "etcd-tls"]
    from etcdguard.kit.collect import CollectOptions, collect

    listed = from_kit(collect(CollectOptions(node.pki_dir, node.manifests_dir)).certificates)
    merged = merge(local, listed)
    assert len([c for c in merged if c.path == str(cert)]) == 1  # the file on disk wins over the record
    assert check_certificates(merged, MonitorConfig()).severity is Severity.CRITICAL  # etcd/server.crt from the kit


def test_check_report_and_metric(tmp_path: Path) -> None:
    node = node_with(tmp_path, 20)
    settings = load_settings(None, {"kit.pki_dir": node.pki_dir}, environ={})
    certs = certificates_for(settings)
    report = run_checks(healthy3(), settings.monitor, certificates=certs)
    assert [r.severity for r in report.results if r.name == "certificates"] == [Severity.WARNING]
    assert report.severity is Severity.WARNING
    none = run_checks(healthy3(), settings.monitor, certificates=[])
    assert any(s.startswith("certificates:") for s in none.skipped)
    metrics = EtcdGuardMetrics()
    metrics.set_certificates(certs)
    text = metrics.render().decode()
    line = next(ln for ln in text.splitlines()
                if ln.startswith("etcdguard_certificate_expiry_days{") and "etcd/server.crt" in ln)
    assert 19 < float(line.rsplit(" ", 1)[1]) <= 20
