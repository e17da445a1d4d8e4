"""Configuration precedence, store URLs and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdguard.config import LocalStoreConfig, S3StoreConfig, load_settings, parse_store_url
from etcdguard.errors import ConfigError


def test_flags_win_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("etcd:\n  endpoints: [http://file:2379]\nbackup:\n  cluster_name: fromfile\n"
                   "  compression_level: 5\n")
    env = {"ETCDGUARD_ENDPOINTS": "http://env:2379", "ETCDGUARD_BACKUP__COMPRESSION_LEVEL": "7"}
    s = load_settings(cfg, {"etcd.endpoints": "http://flag:2379"}, environ=env)
    assert s.etcd.endpoints == ["http://flag:2379"]
    assert s.backup.compression_level == 7
    assert s.backup.cluster_name == "fromfile"
    s = load_settings(cfg, {}, environ=env)
    assert s.etcd.endpoints == ["http://env:2379"]


def test_config_file_from_env_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store: s3://bucket/some/prefix\n")
    s = load_settings(None, {}, environ={"ETCDGUARD_CONFIG": str(cfg), "ETCDGUARD_S3_REGION": "eu-west-1"})
    assert isinstance(s.store, S3StoreConfig)
    assert (s.store.bucket, s.store.prefix, s.store.region) == ("bucket", "some/prefix", "eu-west-1")


@pytest.mark.parametrize(("url", "kind"), [("s3://b/p", "s3"), ("file:///x/y", "local"), ("./rel", "local")])
def test_store_urls(url: str, kind: str) -> None:
    assert parse_store_url(url)["type"] == kind


def test_unknown_store_scheme_is_one_line_error() -> None:
    with pytest.raises(ConfigError, match="unsupported store URL"):
        parse_store_url("gs://bucket")


def test_invalid_values_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backup:\n  compression_level: 99\n")
    with pytest.raises(ConfigError, match=r"backup.compression_level"):
        load_settings(cfg, {}, environ={})
    cfg.write_text("etcd: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(cfg, {}, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml", {}, environ={})


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("etcd:\n  endpiont: x\n")
    with pytest.raises(ConfigError, match="endpiont"):
        load_settings(cfg, {}, environ={})


def test_secrets_are_hidden_in_repr() -> None:
    s = load_settings(None, {"store": "s3://b", "store.secret_access_key": "TOPSECRET",
                             "etcd.password": "hunter2"}, environ={})
    assert "TOPSECRET" not in repr(s) and "hunter2" not in repr(s)


def test_default_store_is_local() -> None:
    store, is_default = load_settings(None, {}, environ={}).store_or_default()
    assert is_default and isinstance(store, LocalStoreConfig)
