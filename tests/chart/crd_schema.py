"""Validate custom resources against their CustomResourceDefinition, as the API server
would with `kubectl apply --validate=strict`.

A CRD's `openAPIV3Schema` is a structural schema: an object with `properties` rejects
fields it does not list unless it says `x-kubernetes-preserve-unknown-fields: true` (or
has `additionalProperties`, a map). JSON Schema allows unknown fields by default, so the
schema is rewritten before jsonschema checks it. CEL rules (`x-kubernetes-validations`)
are not evaluated.
"""

from __future__ import annotations

from typing import Any

import jsonschema

_META = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema that rejects unknown fields where the API server prunes/refuses them."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
    if schema.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {}).update(
            {k: v for k, v in _META.items() if k not in out["properties"]}
        )
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    elif (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if "items" in schema and isinstance(schema["items"], dict):
        out["items"] = strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            # structural schemas repeat no field types here; keep them as constraints only
            out[key] = [strict(s) for s in schema[key]]
    if "not" in schema:
        out["not"] = strict(schema["not"])
    return out


class CRDs:
    """The validators of every served version of the given CRDs."""

    def __init__(self, crds: list[dict]):
        self._schemas: dict[tuple[str, str], dict] = {}
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is None:
                    continue
                schema = strict(schema)
                schema.setdefault("properties", {}).update(
                    {k: v for k, v in _META.items() if k not in schema["properties"]}
                )
                api_version = f"{spec['group']}/{version['name']}"
                self._schemas[(api_version, spec["names"]["kind"])] = schema

    def __contains__(self, obj: dict) -> bool:
        return (obj.get("apiVersion"), obj.get("kind")) in self._schemas

    def groups(self) -> set[str]:
        return {api.split("/")[0] for api, _ in self._schemas}

    def errors(self, obj: dict) -> list[str]:
        """Every violation, each with the path of the offending field."""
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in self._schemas:
            return [f"no served CRD version for {key[0]} {key[1]}"]
        validator = jsonschema.Draft7Validator(self._schemas[key])
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        ]
