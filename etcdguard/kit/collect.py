"""Read what a kit holds from a kubeadm control-plane host (nothing is written).

* from the PKI dir: the cluster CA, front-proxy CA and etcd CA (certificate and key each) and the
  service-account key pair; every other certificate there is listed with its expiry only
  (kubeadm regenerates leaf certificates from the CAs);
* every static pod manifest (each file in the manifests dir not starting with a dot: what the
  kubelet runs);
* the encryption configuration named by ``--encryption-provider-config`` in the kube-apiserver
  manifest (container paths mapped to host paths through its hostPath volumes), and every
  existing file it names; KMS providers are listed in the notes (their keys live in the KMS);
* the kubeadm configuration files that exist (ClusterConfiguration).
"""

from __future__ import annotations

import grp
import hashlib
import os
import posixpath
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from etcdguard.errors import ConfigError
from etcdguard.kit.model import CertificateInfo, FileRole, KitFile, KitSources

# CA and service-account files under the PKI dir, as kubeadm names them.
PKI_FILES: dict[str, FileRole] = {
    "ca.crt": "ca-cert", "ca.key": "ca-key",
    "front-proxy-ca.crt": "ca-cert", "front-proxy-ca.key": "ca-key",
    "etcd/ca.crt": "ca-cert", "etcd/ca.key": "ca-key",
    "sa.key": "sa-key", "sa.pub": "sa-pub",
}
CA_NAMES = {"ca.key": "cluster CA", "front-proxy-ca.key": "front-proxy CA", "etcd/ca.key": "etcd CA"}
ENCRYPTION_FLAG = "--encryption-provider-config"
MAX_FILE_BYTES = 4 << 20
MAX_KIT_BYTES = 64 << 20


@dataclass(frozen=True)
class CollectOptions:
    """Where to look."""

    pki_dir: Path
    manifests_dir: Path
    kubeadm_config: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class CollectedFile:
    """One file's record and bytes (``data`` is b"" for directories)."""

    entry: KitFile
    data: bytes = field(default=b"", repr=False)


@dataclass
class Collection:
    """What was found: the files in kit order, the certificates seen and notes for the operator."""

    files: list[CollectedFile]
    certificates: list[CertificateInfo]
    notes: list[str]
    sources: KitSources

    @property
    def entries(self) -> list[KitFile]:
        """The files' records."""
        return [f.entry for f in self.files]


def _names(uid: int, gid: int) -> tuple[str, str]:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = ""
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = ""
    return user, group


def _entry(path: Path, role: FileRole, st: os.stat_result, data: bytes) -> KitFile:
    user, group = _names(st.st_uid, st.st_gid)
    return KitFile(path=posixpath.normpath(str(path)), role=role, mode=stat.S_IMODE(st.st_mode),
                   uid=st.st_uid, gid=st.st_gid, user=user, group=group, size=len(data),
                   sha256=hashlib.sha256(data).hexdigest() if role != "directory" else "")


def _read_file(path: Path, role: FileRole) -> CollectedFile:
    """Read a regular file (following a symlink, as the kubelet and apiserver do)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB; not a control-plane file")
        data = f.read(MAX_FILE_BYTES + 1)
    return CollectedFile(_entry(path, role, st, data), data)


def _directory(path: Path) -> CollectedFile:
    return CollectedFile(_entry(path, "directory", os.stat(path), b""))


def _certificate(path: Path, in_kit: bool) -> CertificateInfo | None:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = cert.subject == cert.issuer
    return CertificateInfo(path=str(path), subject=cert.subject.rfc4514_string(),
                           issuer=cert.issuer.rfc4514_string(), not_after=cert.not_valid_after_utc,
                           is_ca=is_ca, in_kit=in_kit)


def _containers(pod: Any) -> list[dict[str, Any]]:
    spec = pod.get("spec") if isinstance(pod, dict) else None
    if not isinstance(spec, dict):
        return []
    items = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return [c for c in items if isinstance(c, dict)]


def flag_values(container: dict[str, Any], flag: str) -> list[str]:
    """Values of ``--flag=value`` / ``--flag value`` in a container's command and args."""
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def host_path(pod: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The host path of ``path`` as seen in ``container`` (through its hostPath volume mounts)."""
    volumes = {v.get("name"): (v.get("hostPath") or {}).get("path")
               for v in (pod.get("spec") or {}).get("volumes") or [] if isinstance(v, dict)}
    best: tuple[str, str] | None = None
    for mount in container.get("volumeMounts") or []:
        mount_path, host = str(mount.get("mountPath", "")).rstrip("/"), volumes.get(mount.get("name"))
        if not host or not mount_path:
            continue
        if (path == mount_path or path.startswith(mount_path + "/")) and (
                best is None or len(mount_path) > len(best[0])):
            best = (mount_path, str(host).rstrip("/"))
    if best is None:
        return path
    return best[1] + path[len(best[0]):]


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _encryption(manifests: list[Path]) -> tuple[Path | None, list[Path], list[str]]:
    """The encryption config's host path, the files it names, and notes about its providers."""
    for manifest in manifests:
        pod = _load_yaml(manifest)
        for container in _containers(pod):
            values = flag_values(container, ENCRYPTION_FLAG)
            if not values:
                continue
            config = Path(host_path(pod, container, values[-1]))
            notes: list[str] = []
            data = _load_yaml(config)
            referenced: list[Path] = []
            for resource in (data or {}).get("resources") or [] if isinstance(data, dict) else []:
                for provider in resource.get("providers") or [] if isinstance(resource, dict) else []:
                    if not isinstance(provider, dict):
                        continue
                    for kind, body in provider.items():
                        if kind == "kms" and isinstance(body, dict):
                            notes.append(f"encryption provider kms {body.get('name', '?')!s} at "
                                         f"{body.get('endpoint', '?')!s}: its key lives in the KMS, not in the kit")
            for value in _strings(data):
                candidate = value.removeprefix("unix://").removeprefix("file://")
                if candidate.startswith("/"):
                    mapped = Path(host_path(pod, container, posixpath.normpath(candidate)))
                    if mapped.is_file() and mapped != config:
                        referenced.append(mapped)
            return config, sorted(set(referenced)), notes
    return None, [], []


def collect(options: CollectOptions) -> Collection:
    """Read the kit's files from the host (see the module docstring); ConfigError when nothing is there."""
    pki, manifests_dir = options.pki_dir.absolute(), options.manifests_dir.absolute()
    files: list[CollectedFile] = []
    notes: list[str] = []
    seen: set[str] = set()

    def add(item: CollectedFile) -> None:
        if item.entry.path not in seen:
            seen.add(item.entry.path)
            files.append(item)

    if pki.is_dir():
        for rel, role in PKI_FILES.items():
            path = pki / rel
            if path.is_file():
                add(_directory(path.parent))
                add(_read_file(path, role))
    else:
        notes.append(f"no PKI dir at {pki}")
    missing = [name for rel, name in CA_NAMES.items() if not (pki / rel).is_file()]
    if missing and pki.is_dir():
        notes.append(f"no key of the {', '.join(missing)} in {pki} (external CA?): kubeadm cannot issue "
                     "their certificates from this kit")

    manifests = sorted(p for p in manifests_dir.iterdir()
                       if not p.name.startswith(".") and p.is_file()) if manifests_dir.is_dir() else []
    if manifests:
        add(_directory(manifests_dir))
    for manifest in manifests:
        add(_read_file(manifest, "static-pod-manifest"))
    if not manifests_dir.is_dir():
        notes.append(f"no manifests dir at {manifests_dir}")

    encryption, referenced, enc_notes = _encryption(manifests)
    notes += enc_notes
    if encryption is not None:
        if encryption.is_file():
            add(_directory(encryption.parent))
            add(_read_file(encryption, "encryption-config"))
            for path in referenced:
                add(_directory(path.parent))
                add(_read_file(path, "encryption-key-file"))
        else:
            notes.append(f"{ENCRYPTION_FLAG} names {encryption}, which does not exist: "
                         "Secrets restored without it are unreadable")

    kubeadm_found = [p.absolute() for p in options.kubeadm_config if p.is_file()]
    for path in kubeadm_found:
        add(_read_file(path, "kubeadm-config"))

    if not any(not f.entry.is_dir for f in files):
        raise ConfigError(f"nothing to put in a kit: no CA, key or manifest under {pki} or {manifests_dir}")
    total = sum(f.entry.size for f in files)
    if total > MAX_KIT_BYTES:
        raise ConfigError(f"the kit would hold {total} bytes (more than {MAX_KIT_BYTES >> 20} MiB)")

    in_kit = {f.entry.path for f in files}
    certs = [c for c in (_certificate(p, str(p) in in_kit) for p in sorted(pki.rglob("*.crt")))
             if c is not None] if pki.is_dir() else []
    sources = KitSources(pki_dir=str(pki), manifests_dir=str(manifests_dir),
                         encryption_config=str(encryption) if encryption else None,
                         kubeadm_config=[str(p) for p in kubeadm_found])
    return Collection(files, certs, notes, sources)
