"""etcdguard configuration: pydantic models, loaded from YAML, ``ETCDGUARD_*`` env and flags.

Precedence: command-line flags > environment > config file > defaults. Secrets are
``SecretStr`` and never appear in reprs or logs. ``config/etcdguard.example.yaml`` documents
every key.

Environment variables: ``ETCDGUARD_<SECTION>__<KEY>`` for any key (e.g.
``ETCDGUARD_ETCD__ENDPOINTS=https://a:2379,https://b:2379``), plus the short aliases in
:data:`ENV_ALIASES` (``ETCDGUARD_ENDPOINTS``, ``ETCDGUARD_STORE``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from etcdguard.errors import ConfigError, PermanentError, UsageError
from etcdguard.restore.settings import RestoreConfig

ENV_PREFIX = "ETCDGUARD_"
CONFIG_ENV = "ETCDGUARD_CONFIG"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EtcdConfig(_Model):
    """How to reach etcd."""

    endpoints: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:2379"])
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    dial_timeout: float = Field(5.0, gt=0)
    snapshot_idle_timeout: float = Field(30.0, gt=0)
    member: str | None = None

    @field_validator("endpoints", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [e.strip() for e in v.split(",") if e.strip()] if isinstance(v, str) else v

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for endpoint in v:
            parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
            if parts.scheme not in ("http", "https", "unix", "unixs") or not parts.netloc:
                raise ValueError(f"invalid etcd endpoint {endpoint!r}: expected http(s)://host:port")
        return v


class LocalStoreConfig(_Model):
    """A directory on this host (the embedded default store)."""

    type: Literal["local"] = "local"
    path: Path


class S3StoreConfig(_Model):
    """Any S3-compatible object store; credentials come from the standard boto3 chain."""

    type: Literal["s3"] = "s3"
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    object_lock_days: int | None = Field(None, ge=1)
    part_size_mb: int = Field(5, ge=5, le=5120)
    max_concurrency: int = Field(2, ge=1, le=32)
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1)

    @field_validator("prefix")
    @classmethod
    def _strip_prefix(cls, v: str) -> str:
        return v.strip("/")


StoreConfig = Annotated[LocalStoreConfig | S3StoreConfig, Field(discriminator="type")]


def default_local_store_path() -> Path:
    """The embedded default store: /var/lib/etcdguard/backups as root, else a per-user data dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/etcdguard/backups")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "etcdguard" / "backups"


def parse_store_url(url: str) -> dict[str, Any]:
    """``s3://bucket/prefix``, ``file:///path`` or a plain path -> store config mapping."""
    text = url.strip()
    if text.startswith("s3://"):
        parts = urlsplit(text)
        if not parts.netloc:
            raise ConfigError(f"invalid store URL {url!r}: expected s3://bucket/prefix")
        return {"type": "s3", "bucket": parts.netloc, "prefix": parts.path.strip("/")}
    if text.startswith("file://"):
        return {"type": "local", "path": urlsplit(text).path}
    if "://" in text:
        raise ConfigError(f"unsupported store URL {url!r}: use s3://bucket/prefix, file:///path or a path")
    return {"type": "local", "path": text}


class EncryptionConfig(_Model):
    """age encryption: the service holds only public recipients; identities are for restore."""

    recipients: list[str] = Field(default_factory=list)
    recipients_file: Path | None = None
    identity_file: Path | None = None
    allow_unencrypted: bool = False

    @field_validator("recipients", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [e.strip() for e in v.split(",") if e.strip()] if isinstance(v, str) else v


class SigningConfig(_Model):
    """Ed25519 signing of manifests and verdicts."""

    key_file: Path | None = None
    public_keys: list[Path] = Field(default_factory=list)
    allow_unsigned: bool = False

    @field_validator("public_keys", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [e.strip() for e in v.split(",") if e.strip()] if isinstance(v, str) else v


class BackupConfig(_Model):
    """What a snapshot is called and how it is compressed."""

    cluster_name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    compression_level: int = Field(3, ge=1, le=22)
    compression_threads: int = Field(0, ge=-1, le=16)
    count_keys: bool = True


class VerifyConfig(_Model):
    """Verification sandbox settings."""

    sandbox: Literal["docker", "process"] = "docker"
    image: str | None = None  # "{version}" is replaced; default gcr.io/etcd-development/etcd:v{version}
    memory_limit: str = "1g"
    start_timeout: Annotated[float, Field(gt=0)] = 60.0
    etcd_path: list[Path] = Field(default_factory=list)
    pull: bool = True
    pull_timeout: Annotated[float, Field(gt=0)] = 30.0
    stale_sandbox_seconds: Annotated[float, Field(gt=0)] = 900.0
    accept_inconclusive_hash: bool = False
    workdir: Path | None = None
    docker_data_mode: Literal["auto", "bind", "volume"] = "auto"

    @field_validator("etcd_path", mode="before")
    @classmethod
    def _split_path(cls, v: Any) -> Any:
        return [p for p in v.split(os.pathsep) if p] if isinstance(v, str) else v


class MonitorConfig(_Model):
    """Thresholds for ``status`` / ``check`` and the metrics."""

    probe_timeout: float = Field(3.0, gt=0)
    max_raft_lag: int = Field(1000, ge=0)
    db_quota_warning_percent: float = Field(80.0, gt=0, le=100)
    db_quota_critical_percent: float = Field(95.0, gt=0, le=100)
    quota_backend_bytes: int | None = Field(None, gt=0)
    leader_changes_window_seconds: int = Field(3600, ge=60)
    leader_changes_warning: int = Field(3, ge=1)
    max_backup_age_hours: float = Field(26.0, gt=0)
    max_verification_age_hours: float = Field(50.0, gt=0)
    cert_warning_days: float = Field(30.0, gt=0)
    cert_critical_days: float = Field(7.0, gt=0)
    min_fault_tolerance: int = Field(0, ge=0)  # fault tolerance below this is a WARNING


class RetentionConfig(_Model):
    """Which backups ``prune`` keeps."""

    keep_last: int = Field(7, ge=0)
    hourly: int = Field(24, ge=0)
    daily: int = Field(7, ge=0)
    weekly: int = Field(4, ge=0)
    monthly: int = Field(6, ge=0)
    min_count: int = Field(3, ge=1)
    incomplete_grace_minutes: float = Field(60.0, ge=0)


class ServiceConfig(_Model):
    """``etcdguard serve``: schedules, HTTP endpoints and leader election."""

    listen: str = "127.0.0.1:9479"
    snapshot_cron: str = "0 * * * *"
    verify_cron: str | None = None
    verify_after_snapshot: bool = True
    prune_after_snapshot: bool = True
    health_interval_seconds: float = Field(30.0, gt=0)
    jitter_seconds: int = Field(0, ge=0)
    leader_election: bool = True
    lease_ttl_seconds: int = Field(15, ge=2)
    emergency_local_store: Path | None = None
    log_format: Literal["text", "json"] = "text"
    startup_timeout_seconds: float = Field(60.0, ge=0)
    api_token_file: Path | None = None


class KitConfig(_Model):
    """The control-plane kit (CAs, service-account keys, encryption config, static pod manifests)."""

    enabled: bool = False  # save a kit beside each snapshot when its content changed
    pki_dir: Path = Path("/etc/kubernetes/pki")
    manifests_dir: Path = Path("/etc/kubernetes/manifests")
    kubeadm_config: list[Path] = Field(default_factory=lambda: [
        Path("/etc/kubernetes/kubeadm-config.yaml"), Path("/etc/kubernetes/kubeadm.yaml")])


class Settings(_Model):
    """The whole etcdguard configuration."""

    etcd: EtcdConfig = EtcdConfig()
    store: StoreConfig | None = None
    encryption: EncryptionConfig = EncryptionConfig()
    signing: SigningConfig = SigningConfig()
    backup: BackupConfig = BackupConfig()
    verify: VerifyConfig = VerifyConfig()
    monitor: MonitorConfig = MonitorConfig()
    retention: RetentionConfig = RetentionConfig()
    service: ServiceConfig = ServiceConfig()
    kit: KitConfig = KitConfig()
    restore: RestoreConfig = RestoreConfig()

    @field_validator("store", mode="before")
    @classmethod
    def _store_url(cls, v: Any) -> Any:
        try:
            return parse_store_url(v) if isinstance(v, str) else v
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    def store_or_default(self) -> tuple[StoreConfig, bool]:
        """The configured store, or the embedded local default; returns (store, is_default)."""
        if self.store is not None:
            return self.store, False
        return LocalStoreConfig(path=default_local_store_path()), True


# Short environment aliases -> dotted config keys.
ENV_ALIASES: dict[str, str] = {
    "ENDPOINTS": "etcd.endpoints",
    "CACERT": "etcd.cacert",
    "CERT": "etcd.cert",
    "KEY": "etcd.key",
    "ETCD_USERNAME": "etcd.username",
    "ETCD_PASSWORD": "etcd.password",
    "STORE": "store",
    "RECIPIENTS": "encryption.recipients",
    "RECIPIENTS_FILE": "encryption.recipients_file",
    "IDENTITY": "encryption.identity_file",
    "SIGNING_KEY": "signing.key_file",
    "SIGNING_PUBLIC_KEYS": "signing.public_keys",
    "CLUSTER_NAME": "backup.cluster_name",
    "S3_ENDPOINT_URL": "store.endpoint_url",
    "S3_REGION": "store.region",
}


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = target
    for k in keys[:-1]:
        child = node.get(k)
        if isinstance(child, str) and k == "store":
            child = parse_store_url(child)
        if not isinstance(child, dict):
            child = {}
        node[k] = child
        node = child
    node[keys[-1]] = value


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, Mapping) and isinstance(out.get(k), str) and k == "store":
            out[k] = _deep_merge(parse_store_url(out[k]), v)
        elif isinstance(v, str) and k == "store" and isinstance(out.get(k), dict):
            out[k] = parse_store_url(v)
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class Source:
    """Where a configuration value came from: a flag, an environment variable, the file, or a default."""

    kind: Literal["flag", "env", "file", "default"]
    label: str

    def error(self, key: str, message: str) -> PermanentError:
        """The error for a bad value of ``key`` from here: a flag is a usage error (exit 2)."""
        if self.kind == "flag":
            return UsageError(f"{self.label}: {message}")
        if self.kind == "env":
            return ConfigError(f"{self.label}: {message} ({key})")
        if self.kind == "file":
            return ConfigError(f"config file {self.label}: {key}: {message}")
        return ConfigError(f"configuration: {key}: {message}")


def _leaves(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        out += _leaves(v, key + ".") if isinstance(v, Mapping) and v else [key]
    return out


def _env_layer(environ: Mapping[str, str], sources: dict[str, Source]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or raw == "":
            continue
        suffix = name[len(ENV_PREFIX):]
        if suffix in ENV_ALIASES:
            dotted = ENV_ALIASES[suffix]
        elif "__" in suffix:
            dotted = ".".join(p.lower() for p in suffix.split("__"))
        else:
            continue
        source = Source("env", name)
        try:
            _set_dotted(layer, dotted, raw)
        except ConfigError as exc:
            raise source.error(dotted, exc.message) from None
        sources[dotted] = source
    return layer


def _file_layer(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _error_key(loc: tuple[int | str, ...]) -> str:
    """The dotted config key of a validation error's location (union tags dropped)."""
    parts = [str(p) for p in loc if not str(p).startswith(("function-", "tagged-union"))]
    if len(parts) > 1 and parts[0] == "store" and parts[1] in ("s3", "local"):
        del parts[1]
    return ".".join(parts)


def _source_of(key: str, sources: Mapping[str, Source]) -> Source:
    """The source of ``key``: its own, or the nearest enclosing key's (e.g. ``store`` for a URL)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:n]))
        if found is not None:
            return found
    nested = [s for k, s in sources.items() if k.startswith(key + ".")] if key else []
    return nested[-1] if nested else Source("default", "")


def format_validation_error(err: ValidationError, sources: Mapping[str, Source]) -> PermanentError:
    """One error naming the first offending key, why, and where its value came from."""
    first = err.errors()[0]
    key = _error_key(tuple(first["loc"]))
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    message = first["msg"].removeprefix("Value error, ") + extra
    return _source_of(key, sources).error(key or "config", message)


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from file, environment and flag overrides (dotted keys, None = not given).

    ``flag_names`` maps dotted keys to the flag that set them (``--compression-level``), so an
    invalid value is reported as a usage error of that flag (exit 2); a bad value from an
    ``ETCDGUARD_*`` variable or the file names that variable or file (exit 3).
    """
    env = os.environ if environ is None else environ
    path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    sources: dict[str, Source] = {}
    merged: dict[str, Any] = _file_layer(path) if path else {}
    sources.update(dict.fromkeys(_leaves(merged), Source("file", str(path))))
    env_layer = _env_layer(env, sources)
    try:
        merged = _deep_merge(merged, env_layer)
    except ConfigError as exc:
        raise _source_of("store", sources).error("store", exc.message) from None
    flag_layer: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        source = Source("flag", (flag_names or {}).get(dotted) or "--" + dotted.rsplit(".", 1)[-1].replace("_", "-"))
        try:
            _set_dotted(flag_layer, dotted, value)
        except ConfigError as exc:
            raise source.error(dotted, exc.message) from None
        sources[dotted] = source
    try:
        merged = _deep_merge(merged, flag_layer)
    except ConfigError as exc:
        raise _source_of("store", sources).error("store", exc.message) from None
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        raise format_validation_error(err, sources) from None
