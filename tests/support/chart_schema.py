"""The etcdguard ``config:`` part of the chart's values.schema.json, derived from the pydantic
model, and the Kubernetes definitions the schema references (from kubernetes-validate).

Regenerate both after adding a config key or referencing another Kubernetes type:

    python3 -m tests.support.chart_schema

The rest of values.schema.json (the chart's own values) is written by hand.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from tests.support.helm_chart import CHART, KUBE_VERSION

SCHEMA = CHART / "values.schema.json"
# Secrets never go into the chart's ConfigMap: S3 keys come from Secrets, the etcd password too.
SECRET_KEYS = {("etcd", "password"), ("store", "access_key_id"), ("store", "secret_access_key"),
               ("store", "session_token")}
_DROP = {"description", "title", "default", "discriminator", "writeOnly", "x-kubernetes-group-version-kind",
         "x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy", "x-kubernetes-list-map-keys",
         "x-kubernetes-list-type", "x-kubernetes-map-type", "x-kubernetes-unions"}
_FORMATS = {"path", "password", "int64", "int32", "double", "byte", "date-time"}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items()
                if k not in _DROP and not (k == "format" and v in _FORMATS)}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(copy.deepcopy(defs[schema["$ref"].split("/")[-1]]), defs)
        return {k: _inline(v, defs) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def config_schema() -> dict[str, Any]:
    """etcdguard's Settings as JSON schema, inlined, without secrets; store as URL or mapping."""
    from etcdguard.config import Settings

    raw = Settings.model_json_schema()
    defs = raw.pop("$defs")
    schema: dict[str, Any] = _strip(_inline(raw, defs))
    schema.pop("required", None)
    props = schema["properties"]
    stores = [alt for alt in props["store"]["anyOf"][0]["oneOf"]]
    for section, key in SECRET_KEYS:
        for target in stores if section == "store" else [props[section]]:
            target.get("properties", {}).pop(key, None)
    props["store"] = {"oneOf": [{"type": "string", "pattern": "^(s3://[^/]+(/.*)?|file:///.+|/.+)$"}, *stores]}
    return schema


def kubernetes_definitions(roots: list[str]) -> dict[str, Any]:
    """The named Kubernetes definitions and everything they reference, as ``#/definitions/``."""
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    all_defs = json.loads((base / "_definitions.json").read_text())["$defs"]
    found: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        text = json.dumps(_strip(all_defs[name]))
        found[name] = json.loads(text.replace('"#/$defs/', '"#/definitions/'))
        todo += re.findall(r'"#/\$defs/([^"]+)"', text)
    return dict(sorted(found.items()))


def referenced_roots(schema: dict[str, Any]) -> list[str]:
    """Kubernetes definitions the chart's own values reference."""
    text = json.dumps(schema["properties"])
    return sorted(set(re.findall(r'"#/definitions/([^"]+)"', text)))


def main() -> None:
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["config"] = config_schema()
    schema["definitions"] = kubernetes_definitions(referenced_roots(schema))
    SCHEMA.write_text(json.dumps(schema, indent=1) + "\n")
    print(f"wrote {SCHEMA}")


if __name__ == "__main__":
    main()
