"""A bad configuration value is reported with its real source: the flag (exit 2), the variable or the file (3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdguard.config import load_settings
from etcdguard.errors import ConfigError, ExitCode, PermanentError

LEVEL = "backup.compression_level"


def error_of(**kwargs: object) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return caught.value


def test_a_flag_value_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    err = error_of(overrides={LEVEL: 99}, environ={}, flag_names={LEVEL: "--compression-level"})
    assert err.exit_code == ExitCode.USAGE
    assert err.message == "--compression-level: Input should be less than or equal to 22"


def test_a_flag_without_a_known_name_is_named_after_its_key() -> None:
    assert error_of(overrides={LEVEL: 99}, environ={}).message.startswith("--compression-level: ")


def test_a_variable_is_named_not_the_file(tmp_path: Path) -> None:
    config = tmp_path / "etcdguard.yaml"
    config.write_text("backup:\n  cluster_name: prod\n")
    err = error_of(config_file=config, environ={"ETCDGUARD_BACKUP__COMPRESSION_LEVEL": "77"})
    assert isinstance(err, ConfigError) and err.exit_code == ExitCode.CONFIG
    assert err.message.startswith("ETCDGUARD_BACKUP__COMPRESSION_LEVEL: ")
    assert str(config) not in err.message


def test_an_alias_variable_is_named() -> None:
    err = error_of(environ={"ETCDGUARD_STORE": "ftp://somewhere"})
    assert err.message.startswith("ETCDGUARD_STORE: unsupported store URL")
    err = error_of(environ={"ETCDGUARD_ENDPOINTS": "ftp://x"})
    assert err.message.startswith("ETCDGUARD_ENDPOINTS: invalid etcd endpoint")


def test_the_file_is_named_for_its_own_values(tmp_path: Path) -> None:
    config = tmp_path / "etcdguard.yaml"
    config.write_text("backup:\n  compression_level: 40\nservice:\n  nope: 1\n")
    err = error_of(config_file=config, environ={})
    assert err.exit_code == ExitCode.CONFIG
    assert err.message.startswith(f"config file {config}: backup.compression_level: ")
    assert "(and 1 more)" in err.message


def test_a_flag_overriding_a_bad_file_value_wins(tmp_path: Path) -> None:
    config = tmp_path / "etcdguard.yaml"
    config.write_text("backup:\n  compression_level: 40\n")
    assert load_settings(config, {LEVEL: 5}, environ={}).backup.compression_level == 5


def test_a_store_flag_with_a_bad_url_names_the_flag() -> None:
    err = error_of(overrides={"store": "ftp://x"}, environ={}, flag_names={"store": "--store"})
    assert err.exit_code == ExitCode.USAGE and err.message.startswith("--store: unsupported store URL")
