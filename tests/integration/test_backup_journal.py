"""A backup records its steps in a journal: a failed one says where and why, a good one how long."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from etcdguard.backup.keys import GeneratedKeys
from etcdguard.etcd.tools import free_port
from etcdguard.steps import Journal, RunOutcome, StepState
from tests.integration.snapshot_fixtures import CLI, assert_one_line_error, cli, keys, require_etcd  # noqa: F401
from tests.support.etcd_cluster import etcd_cluster


def test_failed_backup_leaves_a_journal_naming_the_step_and_reason(cli: CLI, keys: GeneratedKeys,
                                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    result = cli("snapshot", "--endpoints", f"http://127.0.0.1:{port}", "--store", str(tmp_path / "store"),
                 "--recipient", keys.recipient_text, "--signing-key", str(keys.signing_key),
                 env={"ETCDGUARD_STATE_DIR": str(state)})
    assert_one_line_error(result, 4, "no etcd endpoint answered")
    [path] = Journal.find(state / "journal", "backup")
    assert str(path) in result.stderr  # the CLI points to it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    journal = Journal.load(path)
    assert journal.outcome is RunOutcome.failed and journal.failed_step == "select source"
    assert "no etcd endpoint answered" in journal.error
    assert [(r.name, r.state) for r in journal.steps] == [("check store", StepState.done),
                                                         ("select source", StepState.failed)]
    assert journal.params["endpoints"] == [f"http://127.0.0.1:{port}"]


def test_good_backup_journal_lists_every_step_with_timing(cli: CLI, keys: GeneratedKeys, tmp_path: Path) -> None:
    require_etcd("3.5.16")
    state = tmp_path / "state"
    with etcd_cluster(tmp_path / "etcd", "3.5.16", size=1) as cluster:
        result = cli("snapshot", "--endpoints", cluster.endpoints[0], "--store", str(tmp_path / "store"),
                     "--recipient", keys.recipient_text, "--signing-key", str(keys.signing_key), "-o", "json",
                     env={"ETCDGUARD_STATE_DIR": str(state)})
    assert result.returncode == 0, result.stderr
    backup_id = json.loads(result.stdout)["backup_id"]
    journal = Journal.load(state / "journal" / f"backup-{backup_id}.json")
    assert journal.outcome is RunOutcome.done and journal.params["sources_tried"] == ["m0"]
    assert [r.name for r in journal.steps] == ["check store", "select source", "hashkv", "count keys", "stream",
                                               "manifest"]
    assert all(r.state is StepState.done and r.elapsed is not None and r.elapsed >= 0 for r in journal.steps)
