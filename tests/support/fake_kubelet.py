"""Just enough of a kubelet to run a rendered etcdguard container as a process on this host.

Volumes become temp dirs or files (Secrets and ConfigMaps written out), hostPath volumes are this
host's paths as they are, container paths in the mounted config and in the environment are mapped
onto them, secretKeyRef variables are resolved, and the image's ENTRYPOINT from the Dockerfile
(``tini -g -- etcdguard``) runs the container's args: tini as PID 1 of a new PID namespace when
this host allows one (``unshare``), as in a pod.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.helm_chart import etcdguard_cmd, image_entrypoint

# The image's etcd for the process sandbox (ETCDGUARD_ETCD_PATH): Debian's 3.5.16 here too.
IMAGE_ETCD_DIRS = [Path("/opt/etcdguard-test/etcd-trixie/usr/bin")]


def pid_namespace_available() -> bool:
    """Whether ``unshare --pid --fork`` works here (root, or user namespaces)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    result = subprocess.run([unshare, "--pid", "--fork", "--kill-child", "true"], capture_output=True,
                            timeout=30, check=False)
    return result.returncode == 0


class FakeKubelet:
    """Maps a rendered pod onto this host and runs its containers as processes."""

    def __init__(self, root: Path, docs: list[dict[str, Any]], secrets: dict[str, dict[str, str]],
                 use_pid_namespace: bool = True) -> None:
        self.root = root
        self.docs = docs
        self.secrets = secrets
        self.use_pid_namespace = use_pid_namespace and pid_namespace_available()
        self._config_mounts: list[tuple[str, Path]] = []

    def _volume_source(self, pod_name: str, volume: dict[str, Any]) -> Path:
        base = self.root / pod_name / "volumes" / volume["name"]
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            return path
        base.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return base
        if "secret" in volume:
            data = self.secrets[volume["secret"]["secretName"]]
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                target = base / item["path"]
                if not target.exists():
                    target.write_text(data[item["key"]])
                    target.chmod(0o400)
            return base
        if "configMap" in volume:
            cm = next(d for d in self.docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == volume["configMap"]["name"])
            for key, text in cm["data"].items():
                (base / key).write_text(self._map_config(text))
            return base
        raise AssertionError(f"unsupported volume {volume}")

    def mounts(self, pod_name: str, pod: dict[str, Any], container: dict[str, Any]) -> list[tuple[str, Path]]:
        """(mountPath, host source), the longest mount path first."""
        volumes = {v["name"]: v for v in pod["volumes"]}
        out = []
        for m in container["volumeMounts"]:
            source = self._volume_source(pod_name, volumes[m["name"]])
            if m.get("subPath"):
                source = source / m["subPath"]
            out.append((m["mountPath"], source))
        return sorted(out, key=lambda t: len(t[0]), reverse=True)

    @staticmethod
    def _map(value: str, mounts: list[tuple[str, Path]]) -> str:
        for target, source in mounts:
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(source) + value[len(target):]
        return value

    def _map_config(self, text: str) -> str:
        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            if isinstance(node, str) and node.startswith("/"):
                return self._map(node, self._config_mounts)
            return node

        return yaml.safe_dump(walk(yaml.safe_load(text)))

    def command(self, pod_name: str, pod: dict[str, Any],
                container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The argv (entrypoint + args) and environment the container runs with."""
        volumes = {v["name"]: v for v in pod["volumes"]}
        # Mount everything but the config first, so paths in the config can be mapped.
        plain = [m for m in container["volumeMounts"] if "configMap" not in volumes[m["name"]]]
        self._config_mounts = self.mounts(pod_name, pod, {"volumeMounts": plain})
        mounts = self.mounts(pod_name, pod, container)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_", "TMPDIR"))}
        etcd_dirs = [d for d in IMAGE_ETCD_DIRS if (d / "etcd").exists()]
        if etcd_dirs:
            env["ETCDGUARD_ETCD_PATH"] = str(etcd_dirs[0])
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = self._map(e["value"], mounts)
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]]
        tmp = dict(mounts).get("/tmp")
        if tmp is not None:
            env["TMPDIR"] = str(tmp)
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
        assert "command" not in container, "the chart relies on the image's entrypoint"
        entry = image_entrypoint()
        assert entry[:3] == ["tini", "-g", "--"] and entry[3] == "etcdguard", entry
        tini = shutil.which("tini")
        assert tini is not None, "tini is not installed (apt-get install tini)"
        argv = [tini, "-g", "--", *etcdguard_cmd(), *args]
        if self.use_pid_namespace:
            argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
        return argv, env

    def run(self, pod_name: str, pod: dict[str, Any], container: dict[str, Any], cwd: Path,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run one container to completion."""
        argv, env = self.command(pod_name, pod, container)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
