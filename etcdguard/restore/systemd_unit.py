"""The local etcd member as its systemd unit runs it: ``systemctl cat`` output read as systemd does.

What is read: ``ExecStart=`` (its words, with ``$VAR`` and ``${VAR}`` expanded from the unit's
environment), ``Environment=`` and ``EnvironmentFile=`` (a leading ``-`` makes a file optional;
files override ``Environment=``), ``User=``/``Group=`` and ``WorkingDirectory=``. Drop-ins come
after the main file in ``systemctl cat`` output (each after a ``# /path`` header), so later
assignments win and an empty assignment resets a list, as in systemd. etcd's settings are its
flags, else its ``ETCD_*`` variables, else etcd's defaults. Reading changes nothing.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from etcdguard.errors import ConfigError
from etcdguard.etcd.childenv import child_env
from etcdguard.restore.discovery import LocalMember, parse_flags

SYSTEMCTL_TIMEOUT = 30.0
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "s": " "}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$")
_SHELLS = {"sh", "bash", "dash"}
_HEADER = re.compile(r"# (/\S+)\Z")  # systemctl cat: "# /etc/systemd/system/etcd.service.d/x.conf"


def split_words(text: str) -> list[str]:
    """Split a unit value into words as systemd does: whitespace, '' and "" quotes, C escapes."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    in_word = False
    i = 0
    while i < len(text):
        c = text[i]
        i += 1
        if c == "\\" and i < len(text):
            nxt = text[i]
            i += 1
            cur.append(_ESCAPES.get(nxt, nxt))
            in_word = True
        elif quote:
            if c == quote:
                quote = ""
            else:
                cur.append(c)
        elif c in "'\"":
            quote, in_word = c, True
        elif c.isspace():
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(c)
            in_word = True
    if quote:
        raise ValueError(f"unbalanced {quote} quote")
    if in_word:
        words.append("".join(cur))
    return words


def expand_specifiers(text: str, unit: str) -> str:
    """``%n %N %p %i %H %%`` (unit name, without suffix, prefix, instance, host name); others kept."""
    base = unit.rsplit(".", 1)[0]
    prefix, _, instance = base.partition("@")
    values = {"n": unit, "N": base, "p": prefix, "i": instance, "H": socket.gethostname(), "%": "%"}
    return re.sub(r"%(.)", lambda m: values.get(m.group(1), m.group(0)), text)


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines (``#``/``;`` comments, quotes, ``\\`` continuations), as systemd reads them."""
    out: dict[str, str] = {}
    text = re.sub(r"\\\n", "", text)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _NAME.match(key):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1] if value[0] == "'" else re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
    return out


def unit_entries(text: str) -> list[tuple[str, str, str, str]]:
    """(section, key, value, file) of each assignment in ``systemctl cat`` output, in order."""
    out: list[tuple[str, str, str, str]] = []
    section, source = "", ""
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            source = header.group(1)
            continue
        while line.endswith("\\"):  # a continuation: the backslash becomes a space
            nxt = next(lines, None)
            while nxt is not None and nxt.strip()[:1] in ("#", ";"):
                nxt = next(lines, None)
            line = line[:-1] + " " + (nxt.strip() if nxt is not None else "")
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            out.append((section, key.strip(), value.strip(), source))
    return out


def expand_command(words: list[str], env: Mapping[str, str]) -> list[str]:
    """systemd's variable expansion: a word ``$VAR`` becomes its value split at whitespace,
    ``${VAR}`` inside a word is replaced as is, ``$$`` is a ``$``."""
    out: list[str] = []
    for word in words:
        if word.startswith("$") and _NAME.match(word[1:]):
            out += split_words(env.get(word[1:], ""))
            continue
        out.append(_BRACED.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""), word))
    return out


def _shell_command(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``sh -c "... etcd $ARGS"``: the script's words, with the shell's variables expanded."""
    if len(argv) >= 3 and Path(argv[0]).name in _SHELLS and argv[1] == "-c":
        script = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), argv[2])
        try:
            return shlex.split(script)
        except ValueError:
            return argv
    return argv


@dataclass(frozen=True)
class ServiceSpec:
    """What a service unit runs: its command line (expanded) and environment, as systemd sees them."""

    unit: str
    argv: list[str]
    env: dict[str, str]
    files: list[str] = field(default_factory=list)
    user: str | None = None
    group: str | None = None
    working_directory: str | None = None


def read_file(path: Path) -> str:
    """An environment file's text (separate so tests can give fixtures)."""
    return path.read_text()


def service_spec(text: str, unit: str, reader: Callable[[Path], str] = read_file) -> ServiceSpec:
    """The ``[Service]`` of ``systemctl cat`` output. ConfigError without an ``ExecStart=``."""
    execs: list[str] = []
    env: dict[str, str] = {}
    env_files: list[str] = []
    single: dict[str, str] = {}
    entries = unit_entries(text)
    files = list(dict.fromkeys(src for *_, src in entries if src))
    for section, key, value, _src in entries:
        if section != "Service":
            continue
        value = expand_specifiers(value, unit)
        if key == "ExecStart":
            execs = [value] if value else []
        elif key == "Environment":
            if not value:
                env = {}
            for word in _words(value, unit, key):
                name, sep, val = word.partition("=")
                if sep and _NAME.match(name):
                    env[name] = val
        elif key == "EnvironmentFile":
            env_files = [*env_files, value] if value else []
        elif key in ("User", "Group", "WorkingDirectory"):
            single[key] = value
    for entry in env_files:
        optional = entry.startswith("-")
        path = Path(entry.lstrip("-"))
        try:
            env.update(parse_env_file(reader(path)))
        except OSError as exc:
            if not optional:
                raise ConfigError(f"{unit}: cannot read EnvironmentFile {path}: {exc.strerror or exc}") from None
    if not execs:
        raise ConfigError(f"{unit} has no ExecStart= (systemctl cat {unit})")
    words = _words(execs[-1], unit, "ExecStart")
    while words and words[0][:1] in ("-", "@", ":", "+", "!"):
        first = words[0].lstrip("-@:+!")
        if first:
            words[0] = first
            break
        words.pop(0)
    argv = _shell_command(expand_command(words, env), env)
    return ServiceSpec(unit=unit, argv=argv, env=env, files=files, user=single.get("User") or None,
                       group=single.get("Group") or None, working_directory=single.get("WorkingDirectory") or None)


def _words(value: str, unit: str, key: str) -> list[str]:
    try:
        return split_words(value)
    except ValueError as exc:
        raise ConfigError(f"{unit}: cannot parse {key}={value}: {exc}") from None


def etcd_settings(spec: ServiceSpec) -> dict[str, str]:
    """etcd's settings from the unit: flags win over ``ETCD_*`` variables, as in etcd."""
    out = {k[5:].lower().replace("_", "-"): v for k, v in spec.env.items() if k.startswith("ETCD_")}
    out.update(parse_flags(spec.argv[1:]))
    return out


def _urls(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def binary_version(path: str) -> str | None:
    """``etcd --version`` of the unit's etcd binary (``3.5.16``), None when it cannot tell."""
    if not Path(path).name.startswith("etcd"):
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, env=child_env(), timeout=10,
                             stdin=subprocess.DEVNULL, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"etcd Version:\s*v?(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else None


def member_from_unit(spec: ServiceSpec) -> LocalMember:
    """The local member run by ``spec``. ConfigError when the unit names no data dir or uses a
    ``--config-file`` (describe the member in ``restore.member`` then)."""
    s = etcd_settings(spec)
    where = f"{spec.unit} ({', '.join(spec.files) or 'systemctl cat'})"
    if s.get("config-file"):
        raise ConfigError(f"{where} runs etcd with --config-file {s['config-file']}, which etcdguard does not "
                          "read: describe the member in restore.member")
    if not s.get("data-dir"):
        raise ConfigError(f"{where} names no data dir (--data-dir or ETCD_DATA_DIR): set restore.member.data_dir")
    data_dir = Path(s["data-dir"])
    wal = Path(s["wal-dir"]) if s.get("wal-dir") else None
    cwd = Path((spec.working_directory or "/").lstrip("-"))
    if not data_dir.is_absolute() or (wal is not None and not wal.is_absolute()):
        if not cwd.is_absolute():
            raise ConfigError(f"{where}: relative data dir {data_dir} and no absolute WorkingDirectory=")
        data_dir, wal = cwd / data_dir, (cwd / wal if wal is not None else None)
    quota = s.get("quota-backend-bytes", "")
    owner = (f"{spec.user}:{spec.group}" if spec.group else spec.user) if spec.user else None
    return LocalMember(
        name=s.get("name") or "default", data_dir=data_dir, wal_dir=wal,
        peer_urls=_urls(s.get("initial-advertise-peer-urls") or s.get("listen-peer-urls") or "http://localhost:2380"),
        client_urls=_urls(s.get("advertise-client-urls") or "http://localhost:2379"),
        listen_client_urls=_urls(s.get("listen-client-urls") or "http://localhost:2379"),
        listen_peer_urls=_urls(s.get("listen-peer-urls") or "http://localhost:2380"),
        source=f"systemd unit {spec.unit}", initial_cluster=s.get("initial-cluster") or None,
        quota_backend_bytes=int(quota) if quota.isdigit() and int(quota) > 0 else None,
        cert_file=Path(s["cert-file"]) if s.get("cert-file") else None,
        key_file=Path(s["key-file"]) if s.get("key-file") else None,
        trusted_ca_file=Path(s["trusted-ca-file"]) if s.get("trusted-ca-file") else None, owner=owner,
        version=binary_version(spec.argv[0]) if spec.argv else None)


def systemctl(*args: str, timeout: float = SYSTEMCTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``systemctl`` with the minimal child environment (OSError/TimeoutExpired to the caller)."""
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, env=child_env(), timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def read_unit(unit: str) -> str:
    """``systemctl cat UNIT`` (the unit file and its drop-ins). ConfigError when it cannot be read."""
    try:
        done = systemctl("cat", "--no-pager", unit)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "timed out"
        raise ConfigError(f"cannot read systemd unit {unit}: systemctl cat: {reason}") from None
    if done.returncode != 0 or not done.stdout.strip():
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"cannot read systemd unit {unit}: {why[-1] if why else f'exit {done.returncode}'} "
                          "(set restore.etcd_unit, or describe the member in restore.member)")
    return done.stdout


def unit_exists(unit: str) -> str | None:
    """``systemctl cat`` output when the unit can be read, else None (for run-mode detection)."""
    try:
        return read_unit(unit)
    except ConfigError:
        return None

