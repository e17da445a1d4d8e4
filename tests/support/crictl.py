"""A ``crictl`` stand-in that answers from the kubelet stand-in's containers (see :mod:`tests.support.kubelet`).

The kubelet stand-in writes its containers to a JSON state file; :func:`install` puts an executable
``crictl`` into a bin dir (put it first on PATH) that runs :func:`main` on that file. It answers
what etcdguard asks, shaped like the real crictl:

* ``crictl ps -q --name REGEX``: the ids of running containers whose name matches, one a line;
* ``crictl ps -a --name REGEX -o json``: ``{"containers": [{"id", "metadata": {"name", "attempt"},
  "state": "CONTAINER_RUNNING" | "CONTAINER_EXITED", "createdAt"}]}`` (without ``-a`` running only).

Every call is appended to ``<state>.calls`` (JSON lines: time, args, ids answered) so a test can
tell what etcdguard saw and when.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNNING, EXITED = "CONTAINER_RUNNING", "CONTAINER_EXITED"


def install(bin_dir: Path, state: Path) -> Path:
    """Write ``bin_dir/crictl`` answering from ``state``; returns its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "crictl"
    shim.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                    f"from tests.support.crictl import main\nsys.exit(main({str(state)!r}, sys.argv[1:]))\n")
    shim.chmod(0o755)
    return shim


def calls(state: Path) -> list[dict[str, Any]]:
    """The calls answered so far (oldest first)."""
    log = state.with_name(state.name + ".calls")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def main(state: str, argv: list[str]) -> int:
    if not argv or argv[0] != "ps":
        print(f"crictl stand-in: unsupported command {argv}", file=sys.stderr)
        return 1
    quiet = show_all = False
    name, output = "", "table"
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg in ("-a", "--all"):
            show_all = True
        elif arg == "--name":
            name = next(args, "")
        elif arg in ("-o", "--output"):
            output = next(args, "table")
        else:
            print(f"crictl stand-in: unsupported flag {arg}", file=sys.stderr)
            return 1
    try:
        containers = json.loads(Path(state).read_text())["containers"]
    except (OSError, ValueError, KeyError):
        containers = []
    pattern = re.compile(name)
    found = [c for c in containers if pattern.search(c["metadata"]["name"]) and (show_all or c["state"] == RUNNING)]
    with open(f"{state}.calls", "a") as log:
        log.write(json.dumps({"time": time.time(), "args": argv, "ids": [c["id"] for c in found]}) + "\n")
    if quiet:
        print("\n".join(c["id"] for c in found))
    elif output == "json":
        print(json.dumps({"containers": found}, indent=2))
    else:
        for c in found:
            print(f"{c['id'][:13]}  {c['metadata']['name']}  {c['state']}  {c['metadata']['attempt']}")
    return 0
