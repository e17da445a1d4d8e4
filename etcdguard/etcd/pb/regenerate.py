"""Regenerate etcdguard's etcd v3 gRPC stubs from etcd's own .proto files.

etcd's protos carry gogoproto, grpc-gateway and openapi options that only matter to Go.
This script copies rpc.proto, kv.proto and auth.proto from an etcd source tree (Debian's
``golang-etcd-server-dev`` ships them under /usr/share/gocode), strips those options and
imports, keeps the proto packages (so gRPC method paths stay ``/etcdserverpb.KV/Range``),
and runs grpcio-tools' protoc.

Usage::

    python -m etcdguard.etcd.pb.regenerate [ETCD_API_DIR]

ETCD_API_DIR defaults to the Debian location of go.etcd.io/etcd/api.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_API_DIR = Path("/usr/share/gocode/src/go.etcd.io/etcd/api")
PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_IMPORT_ROOT = "etcdguard/etcd/pb/proto"
SOURCES = {
    "rpc.proto": "etcdserverpb/rpc.proto",
    "kv.proto": "mvccpb/kv.proto",
    "auth.proto": "authpb/auth.proto",
}
DROPPED_IMPORT = re.compile(
    r'^import\s+"(gogoproto|google/api|protoc-gen-openapiv2|etcd/api/versionpb)[^"]*";\s*$', re.M
)
KEPT_IMPORT = re.compile(r'^import\s+"(?:etcd/api/)?(mvccpb/kv|authpb/auth)\.proto";', re.M)
CUSTOM_FIELD_OPTIONS = re.compile(r"\s*\[[^\[\]]*\([A-Za-z_.]+\)[^\[\]]*\]")
GO_PACKAGE = re.compile(r'^option\s+go_package\s*=.*;\s*$', re.M)


def _strip_custom_option_statements(text: str) -> str:
    """Remove every ``option (custom.name) = ...;`` statement, including brace-nested values."""
    out: list[str] = []
    i = 0
    pattern = re.compile(r"option\s*\(")
    while True:
        match = pattern.search(text, i)
        if match is None:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i : match.start()])
        depth = 0
        j = match.end()
        while j < len(text):
            ch = text[j]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == ";" and depth == 0:
                break
            j += 1
        i = j + 1


def clean_proto(text: str) -> str:
    """Return ``text`` with Go-only options and imports removed and local imports rewritten."""
    text = DROPPED_IMPORT.sub("", text)
    text = KEPT_IMPORT.sub(
        lambda m: f'import "{PROTO_IMPORT_ROOT}/{m.group(1).split("/")[1]}.proto";', text
    )
    text = GO_PACKAGE.sub("", text)
    text = _strip_custom_option_statements(text)
    text = CUSTOM_FIELD_OPTIONS.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def main(argv: list[str]) -> int:
    """Copy, clean and compile the protos into this package."""
    from grpc_tools import protoc  # build-time only dependency

    api_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_API_DIR
    proto_dir = PACKAGE_DIR / "proto"
    proto_dir.mkdir(exist_ok=True)
    for target, source in SOURCES.items():
        (proto_dir / target).write_text(clean_proto((api_dir / source).read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        staged = root / PROTO_IMPORT_ROOT
        staged.mkdir(parents=True)
        for target in SOURCES:
            shutil.copy(proto_dir / target, staged / target)
        out = root / "out"
        out.mkdir()
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *(str(staged / t) for t in SOURCES),
        ]
        if protoc.main(args) != 0:
            print("protoc failed", file=sys.stderr)
            return 1
        for generated in (out / PROTO_IMPORT_ROOT).iterdir():
            if generated.suffix in {".py", ".pyi"}:
                fixed = generated.read_text().replace(
                    "from etcdguard.etcd.pb.proto import", "from etcdguard.etcd.pb import"
                )
                (PACKAGE_DIR / generated.name).write_text(fixed)
    print(f"regenerated stubs in {PACKAGE_DIR} from {api_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
