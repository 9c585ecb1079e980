"""The predictor's request contract: V1 and V2 bodies in, rows out; predictions in, answers out.

Used by both paths a request can take: the KServe model (`predictor`), which turns a
`BadInput` into a 400 naming the field, and the raw-ASGI fast path (`server`), which hands
anything it cannot answer to KServe. Stdlib only; the README ("Serving") shows the bodies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_project.serving.constants import FEATURE_COLUMNS, MAX_INSTANCES, OUTPUT_NAME

_FEATURES = frozenset(FEATURE_COLUMNS)


JSON_TYPE = b"application/json"
# What clients send when they do not say: nothing (tritonclient's JSON mode), curl's default
# for -d, and the catch-alls. Without the binary extension's `inference-header-content-length`
# such a body can only be JSON; KServe would take it for binary tensors and answer 400.
GENERIC_TYPES = frozenset((b"", b"application/octet-stream", b"text/plain", b"application/x-www-form-urlencoded"))


def reads_as_json(content_type: bytes | None) -> bool:
    """Whether a predict body with this Content-Type (and no binary-extension header) is JSON."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == JSON_TYPE or media in GENERIC_TYPES


class BadInput(ValueError):
    """A request that breaks the contract; the message names the field and the problem."""


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_count(n: int, where: str, max_rows: int = MAX_INSTANCES) -> None:
    if n == 0:
        raise BadInput(f"{where}: must contain at least one instance")
    if n > max_rows:
        raise BadInput(f"{where}: {n} instances, at most {max_rows} per request")


# --------------------------------------------------------------------------- V1
def v1_rows(body: Any, features: Sequence[str] = FEATURE_COLUMNS,
            max_rows: int = MAX_INSTANCES) -> list[tuple[str, ...]]:
    """`{"instances": [{<feature>: <string>, ...}, ...]}` -> rows in `features` order."""
    if isinstance(body, (bytes, bytearray)):  # a non-JSON content type: KServe passes raw bytes
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"body: malformed JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadInput(f"body: expected a JSON object with 'instances', got {type_name(body)}")
    if len(body) != 1 or "instances" not in body:
        extra = sorted(set(body) - {"instances"})
        if extra:
            raise BadInput(f"body: unexpected field(s) {extra}; only 'instances' is accepted")
        raise BadInput("instances: missing field")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise BadInput(f"instances: expected an array, got {type_name(instances)}")
    check_count(len(instances), "instances", max_rows)
    wanted = _FEATURES if features is FEATURE_COLUMNS else frozenset(features)
    rows = []
    for i, instance in enumerate(instances):
        if type(instance) is not dict or instance.keys() != wanted:
            _v1_instance_error(i, instance, features, wanted)
        row = tuple([instance[f] for f in features])
        for value in row:
            if type(value) is not str:
                _v1_value_error(i, row, features)
        rows.append(row)
    return rows


def _v1_instance_error(i: int, instance: Any, features: Sequence[str], wanted: frozenset[str]) -> None:
    if not isinstance(instance, dict):
        raise BadInput(f"instances[{i}]: expected an object with fields {list(features)}, got {type_name(instance)}")
    if instance.keys() == wanted:
        return  # a dict subclass with the right fields
    missing = [f for f in features if f not in instance]
    if missing:
        raise BadInput(f"instances[{i}]: missing field(s) {missing}")
    raise BadInput(f"instances[{i}]: unexpected field(s) {sorted(str(k) for k in instance if k not in wanted)}")


def _v1_value_error(i: int, row: tuple[Any, ...], features: Sequence[str]) -> None:
    for f, value in zip(features, row):
        if not isinstance(value, str):
            raise BadInput(f"instances[{i}].{f}: expected a string, got {type_name(value)}")


def v1_answer(predictions: list[float]) -> dict[str, Any]:
    return {"predictions": predictions}


# --------------------------------------------------------------------------- V2
def v2_parameters(parameters: Any) -> None:
    """Request parameters: none, or `{"content_type": "pd"}` (the pandas form)."""
    params = parameters or {}
    if not isinstance(params, Mapping):
        raise BadInput("parameters: expected an object")
    content_type = params.get("content_type")
    if content_type not in (None, "pd"):
        raise BadInput(f"parameters.content_type: expected 'pd' or absent, got {content_type!r}")


class NotCanonical(BadInput):
    """(strict mode) valid perhaps, but only after a coercion KServe's schema would make."""


_INPUT_KEYS = frozenset(("name", "shape", "datatype", "data"))
_INPUT_KEYS_WITH_PARAMETERS = frozenset(("name", "shape", "datatype", "data", "parameters"))


def v2_rows(inputs: Sequence[Mapping[str, Any]], features: Sequence[str] = FEATURE_COLUMNS,
            max_rows: int = MAX_INSTANCES, outputs: Sequence[str] = (), *,
            strict: bool = False) -> list[tuple[str, ...]]:
    """One BYTES input per feature (`{"name", "datatype", "shape", "data"}`) -> rows in
    `features` order. `outputs`: the names of requested outputs, if any.

    `strict` is the fast path's single pass over parsed JSON: it also refuses, as
    NotCanonical, what KServe's schema would first coerce or ignore, and checks the inputs
    in the order they come (its errors are never shown: the request goes to KServe). Without
    it, the problems are reported in the contract's order, as the KServe model needs.
    """
    if not inputs:
        raise BadInput(f"inputs: must contain one BYTES input per feature {list(features)}")
    wanted = _FEATURES if features is FEATURE_COLUMNS else frozenset(features)
    if strict:
        by_name = _strict_columns(inputs)
        if by_name.keys() != wanted:
            raise BadInput("inputs: not one input per feature")
    else:
        by_name = {inp["name"]: inp for inp in inputs}
        if len(by_name) != len(inputs) or by_name.keys() != wanted:
            _names_error(inputs, features, wanted, by_name)
        if outputs:
            wrong = sorted(o for o in outputs if o != OUTPUT_NAME)
            if wrong:
                raise BadInput(f"outputs: unknown output(s) {wrong}; the only output is {OUTPUT_NAME!r}")
        first = features[0]
        n_rows = -1
        for f in features:
            inp = by_name[f]
            by_name[f] = v2_column(f, inp["datatype"], inp["shape"], inp["data"], n_rows, first)
            n_rows = len(by_name[f])
    columns = [by_name[f] for f in features]
    check_count(len(columns[0]), "inputs", max_rows)
    return list(zip(*columns))


def _strict_columns(inputs: Sequence[Any]) -> dict[Any, Any]:
    """name -> values of canonical JSON inputs, checked in the order they come."""
    columns: dict[Any, Any] = {}
    n_rows, first = -1, ""
    for inp in inputs:
        if type(inp) is not dict or (inp.keys() != _INPUT_KEYS and not _unused_parameters(inp)):
            raise NotCanonical("inputs: an input that is not a plain object")
        name, shape = inp["name"], inp["shape"]
        if (type(name) is not str or name in columns or type(shape) is not list
                or (shape and type(shape[0]) is not int) or (len(shape) > 1 and type(shape[1]) is not int)):
            raise NotCanonical("inputs: a name or shape of another type, or a name twice")
        columns[name] = values = v2_column(name, inp["datatype"], shape, inp["data"], n_rows, first)
        n_rows, first = len(values), first or name
    return columns


def _names_error(inputs: Sequence[Mapping[str, Any]], features: Sequence[str], wanted: frozenset[str],
                 by_name: Mapping[Any, Any]) -> None:
    names = [inp["name"] for inp in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInput(f"inputs: duplicate input name(s) {duplicates}")
    missing = [f for f in features if f not in by_name]
    if missing:
        raise BadInput(f"inputs: missing input(s) {missing}")
    raise BadInput(f"inputs: unexpected input(s) {sorted(n for n in names if n not in wanted)}")


def _unused_parameters(inp: Mapping[str, Any]) -> bool:
    """An input with an empty `parameters` field besides the four others."""
    return inp.keys() == _INPUT_KEYS_WITH_PARAMETERS and inp["parameters"] is None


def v2_column(name: str, datatype: Any, shape: Any, data: Any, n_rows: int = -1, first: str = "") -> list[str]:
    """The one column checker: the values of a BYTES input of shape [n] or [n, 1] (data flat
    or one value per row), as strings; `n_rows` >= 0: the row count of input `first`, which
    this one must match."""
    if datatype == "BYTES" and type(shape) is list and len(shape) == 1 and type(data) is list:
        n = shape[0]  # the usual [n] of strings: no more checks than the full path below makes
        if type(n) is int and n == len(data) and (n_rows < 0 or n == n_rows) and (not n or type(data[0]) is str):
            for value in data:
                if type(value) is not str:
                    break
            else:
                return data
    if datatype != "BYTES":
        raise BadInput(f"inputs[{name}].datatype: expected BYTES, got {datatype!r}")
    if type(shape) is not list:
        shape = list(shape or [])
    n = shape[0] if shape else None
    if len(shape) == 1:
        ok = isinstance(n, int) and n >= 0
    else:
        ok = len(shape) == 2 and shape[1] == 1 and isinstance(n, int) and n >= 0 and isinstance(shape[1], int)
    if not ok:
        raise BadInput(f"inputs[{name}].shape: expected [n] or [n, 1], got {shape}")
    if not isinstance(data, list):
        raise BadInput(f"inputs[{name}].data: expected an array, got {type_name(data)}")
    values = data
    if data and isinstance(data[0], list) and all(isinstance(v, list) for v in data):  # [[v], [v], ...]
        values = []
        for row in data:
            if len(row) != 1:
                raise BadInput(f"inputs[{name}].data: nested rows must hold exactly one value, got {len(row)}")
            values.append(row[0])
    if len(values) != n:
        raise BadInput(f"inputs[{name}]: shape {shape} does not match data length {len(values)}")
    if n_rows >= 0 and n != n_rows:
        raise BadInput(f"inputs[{name}]: {n} rows, but inputs[{first}] has {n_rows}")
    for value in values:
        if type(value) is not str:
            return _decoded(name, values)
    return values


def _decoded(name: str, values: list[Any]) -> list[str]:
    """`values` with UTF-8 bytes decoded (binary requests); anything else is an error."""
    out = list(values)
    for j, value in enumerate(out):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = out[j] = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"inputs[{name}].data[{j}]: not valid UTF-8") from None
        if not isinstance(value, str):
            raise BadInput(f"inputs[{name}].data[{j}]: expected a string, got {type_name(value)}")
    return out


def v2_answer(model_name: str, model_version: str, request_id: str, predictions: list[float]) -> dict[str, Any]:
    """The Open Inference Protocol response, fields in the order KServe writes them; no
    `parameters` (the spec's schema has an object there, never `null`)."""
    return {
        "model_name": model_name,
        "model_version": model_version,
        "id": request_id,
        "outputs": [{"name": OUTPUT_NAME, "shape": [len(predictions)], "datatype": "FP64", "data": predictions}],
    }


def without_nulls(answer: Any) -> Any:
    """A V2 answer (or model metadata) as the spec's schema has it: `parameters`/`versions` left
    out where KServe's pydantic models write `null`, at the top and in each output."""
    if type(answer) is not dict:
        return answer
    out = {k: v for k, v in answer.items() if v is not None or k not in _NULLABLE}
    outputs = out.get("outputs")
    if type(outputs) is list:
        out["outputs"] = [{k: v for k, v in o.items() if v is not None or k not in _NULLABLE}
                          if type(o) is dict else o for o in outputs]
    return out


_NULLABLE = frozenset(("parameters", "versions", "id", "model_version", "properties"))
