"""Which etcd image the Docker sandbox runs, and building one locally when none can be pulled.

Resolution order for a wanted version V:

1. the configured image (``verify.image``; ``{version}`` in it is replaced by V), else the
   official ``gcr.io/etcd-development/etcd:vV``, when present locally;
2. the locally built ``etcdguard/etcd:V-local`` when present (cached from an earlier run);
3. a short pull attempt of the image from step 1;
4. ``etcdguard/etcd:N-local`` built with ``docker import`` from the host's etcd binaries of the
   nearest version N (static binaries as they are; dynamic ones with the shared libraries and
   the dynamic loader ``ldd`` names), cached for the next run.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation, EtcdVersion
from etcdguard.etcd.tools import child_env, has_etcdutl
from etcdguard.verify.hosttools import is_elf, pick_host_etcd, sandbox_version
from etcdguard.verify.workdirs import private_tempdir, remove_tree

log = logging.getLogger(__name__)

OFFICIAL_IMAGE = "gcr.io/etcd-development/etcd:v{version}"
LOCAL_REPOSITORY = "etcdguard/etcd"
VERSION_LABEL = "etcdguard.etcd-version"
ETCDUTL_LABEL = "etcdguard.etcdutl"
BIN_DIR = "/usr/local/bin"
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


@dataclass(frozen=True)
class EtcdImage:
    """An image the sandbox can run, and what is known about it."""

    ref: str
    version: str | None
    etcdutl: bool
    origin: str  # "present", "pulled", "cached-local", "built-local"


def image_name(configured: str | None, version: str) -> str:
    """The configured image (``{version}`` substituted) or the official one for ``version``."""
    template = configured or OFFICIAL_IMAGE
    return template.replace("{version}", version)


def local_tag(version: str) -> str:
    """Tag of the image built locally from host binaries."""
    return f"{LOCAL_REPOSITORY}:{version}-local"


def _describe(image: Any, ref: str, wanted: str, origin: str) -> EtcdImage:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    version = labels.get(VERSION_LABEL)
    if version is None:
        tag = ref.rsplit(":", 1)[-1] if ":" in ref.rsplit("/", 1)[-1] else ""
        try:
            version = str(EtcdVersion.parse(tag))
        except ValueError:
            version = None
    etcdutl = labels[ETCDUTL_LABEL] == "1" if ETCDUTL_LABEL in labels else has_etcdutl(version or wanted)
    return EtcdImage(ref, version, etcdutl, origin)


def _get(client: Any, ref: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _pull(client: Any, ref: str, timeout: float) -> Any | None:
    import docker.errors
    import requests.exceptions

    repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    previous = client.api.timeout
    client.api.timeout = timeout
    try:
        return client.images.pull(repository, tag=tag)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        log.info("cannot pull %s (%s); will build a local etcd image", ref, str(exc).splitlines()[0][:200])
        return None
    finally:
        client.api.timeout = previous


def resolve_image(client: Any, wanted: str, *, configured: str | None, pull: bool, pull_timeout: float,
                  etcd_path: Iterable[Path] = ()) -> EtcdImage:
    """Find or make an image for etcd ``wanted`` (see the module docstring)."""
    wanted = sandbox_version(wanted, etcd_path) or wanted  # never 3.5.0-3.5.2 by default
    ref = image_name(configured, wanted)
    found = _get(client, ref)
    if found is not None:
        return _describe(found, ref, wanted, "present")
    cached = _get(client, local_tag(wanted))
    if cached is not None:
        return _describe(cached, local_tag(wanted), wanted, "cached-local")
    if pull:
        pulled = _pull(client, ref, pull_timeout)
        if pulled is not None:
            return _describe(pulled, ref, wanted, "pulled")
    try:
        host = pick_host_etcd(wanted, etcd_path)
    except SandboxUnavailableError:
        raise SandboxUnavailableError(
            f"etcd image {ref} is not present and cannot be pulled, and no etcd binaries on this host "
            "can build one: docker load an etcd image, set verify.image, or use --sandbox process") from None
    tag = local_tag(host.version)
    cached = _get(client, tag)
    if cached is not None:
        return _describe(cached, tag, wanted, "cached-local")
    build_local_image(client, host.install, tag)
    built = _get(client, tag)
    if built is None:
        raise SandboxUnavailableError(f"docker import of {tag} reported success but the image is missing")
    return _describe(built, tag, wanted, "built-local")


def shared_libraries(binary: Path) -> list[Path]:
    """Shared libraries and dynamic loader ``ldd`` lists for ``binary`` ([] when static)."""
    try:
        done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=False,
                              env=child_env())
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0 or "not a dynamic executable" in done.stdout + done.stderr:
        return []
    paths = []
    for line in done.stdout.splitlines():
        m = _LDD_PATH.search(line)
        if m:
            paths.append(Path(m.group(1)))
    return paths


def _add_file(tar: tarfile.TarFile, source: Path, arcname: str, mode: int) -> None:
    real = source.resolve()
    info = tarfile.TarInfo(arcname)
    info.size = real.stat().st_size
    info.mode = mode
    with real.open("rb") as f:
        tar.addfile(info, f)


def _add_dir(tar: tarfile.TarFile, arcname: str, mode: int) -> None:
    info = tarfile.TarInfo(arcname)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def rootfs_members(install: EtcdInstallation) -> dict[str, Path]:
    """arcname -> host file for the image's root filesystem (binaries and what they link)."""
    binaries = [p for p in (install.etcd, install.etcdctl, install.etcdutl) if p is not None and is_elf(p)]
    if install.etcd not in binaries:
        raise SandboxUnavailableError(f"{install.etcd} is not an ELF executable; cannot build an image")
    files: dict[str, Path] = {}
    for binary in binaries:
        files[f"{BIN_DIR.lstrip('/')}/{binary.name}"] = binary
        for lib in shared_libraries(binary):
            files[str(lib).lstrip("/")] = lib
    return files


def build_local_image(client: Any, install: EtcdInstallation, tag: str) -> None:
    """``docker import`` a minimal rootfs holding ``install``'s binaries, tagged ``tag``."""
    import docker.errors

    files = rootfs_members(install)
    lib_dirs = sorted({str(Path("/" + a).parent) for a in files if not a.startswith(BIN_DIR.lstrip("/"))})
    workdir = private_tempdir("etcdguard-image-")
    try:
        tar_path = workdir / "rootfs.tar"
        with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
            dirs = {str(Path(a).parent) for a in files} | {"tmp", "var/lib/etcd", "etc"}
            expanded = set()
            for d in dirs:
                parts = Path(d).parts
                expanded |= {"/".join(parts[:i + 1]) for i in range(len(parts))}
            for d in sorted(expanded):
                _add_dir(tar, d, 0o1777 if d == "tmp" else 0o700 if d == "var/lib/etcd" else 0o755)
            for arcname, source in sorted(files.items()):
                _add_file(tar, source, arcname, 0o755)
            passwd = b"root:x:0:0:root:/root:/sbin/nologin\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(passwd))
        changes = [
            f'ENTRYPOINT ["{BIN_DIR}/etcd"]',
            "WORKDIR /var/lib/etcd",
            f'LABEL {VERSION_LABEL}="{install.version}"',
            f'LABEL {ETCDUTL_LABEL}="{"1" if install.etcdutl is not None else "0"}"',
            'LABEL etcdguard.built-by="etcdguard docker import"',
        ]
        if lib_dirs:
            changes.append(f"ENV LD_LIBRARY_PATH={':'.join(lib_dirs)}")
        repository, _, version_tag = tag.rpartition(":")
        log.info("building %s from %s with docker import", tag, install.directory)
        try:
            client.api.import_image_from_file(str(tar_path), repository=repository, tag=version_tag,
                                              changes=changes)
        except docker.errors.APIError as exc:
            raise SandboxUnavailableError(
                f"docker import of {tag} failed: {exc.explanation or exc}") from None
    finally:
        remove_tree(workdir)
