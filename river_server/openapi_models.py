"""Request-body schemas of the OpenAPI document, generated from river_runner.wire's models.

pydantic writes JSON Schema 2020-12; the document is OpenAPI 3.0, whose schema dialect
says `nullable: true` instead of a `null` type, `exclusiveMinimum: true` beside `minimum`
instead of a number, and has no `const`. This module rewrites those few spellings and
moves each model's `$defs` into `components/schemas`, so the host validates with exactly
the shapes it publishes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"


def to_openapi30(schema: Any) -> Any:
    """One JSON Schema 2020-12 node (and everything under it) in OpenAPI 3.0 spelling."""
    if isinstance(schema, list):
        return [to_openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: to_openapi30(value) for key, value in schema.items()}
    out.pop("title", None)  # pydantic's titles repeat the property names
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), (int, float)) and not isinstance(out[bound], bool):
            out[plain] = out.pop(bound)
            out[bound] = True
    for combiner in ("anyOf", "oneOf"):
        options = out.get(combiner)
        if not isinstance(options, list):
            continue
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == len(options):
            continue
        del out[combiner]
        out["nullable"] = True
        if len(rest) == 1:
            only = rest[0]
            # A $ref takes no siblings in 3.0: wrap it.
            out.update({"allOf": [only]} if "$ref" in only else only)
        else:
            out[combiner] = rest
    return out


def _schemas(
    models: tuple[type[BaseModel], ...], mode: Literal["validation", "serialization"]
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
        for name, nested in schema.pop("$defs", {}).items():
            found[name] = to_openapi30(nested)
        found[model.__name__] = to_openapi30(schema)
    return found


def request_schemas(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """components/schemas entries for `models` and every model they nest."""
    return _schemas(models, "validation")


def _without_null_defaults(schema: Any) -> Any:
    """An answer's optional field is absent, never null: `default: None` (how a response
    model spells "may be left out") is not part of what the document promises."""
    if isinstance(schema, list):
        return [_without_null_defaults(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: _without_null_defaults(value)
        for key, value in schema.items()
        if not (key == "default" and value is None)
    }


def response_schemas(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """components/schemas entries for the answer shapes (river_runner.wire.responses):
    fields with a default (those some answers leave out) are not required."""
    return {
        name: _without_null_defaults(schema)
        for name, schema in _schemas(models, "serialization").items()
    }


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """An operation's `parameters` (in: query) from its river_runner.wire.queries model:
    the host checks exactly what the document shows."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
    required = set(schema.get("required", []))
    found = []
    for name, prop in schema.get("properties", {}).items():
        prop = to_openapi30(prop)
        description = prop.pop("description", "")
        if prop.pop("nullable", False) and prop.get("default") is None:
            prop.pop("default", None)  # a query parameter is absent, never null
        if prop.get("type") == "string" and isinstance(prop.get("default"), bool):
            prop["default"] = "1" if prop["default"] else "0"  # a flag, written as text
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
            "description": description,
        }
        if prop.get("type") == "array":
            parameter.update(style="form", explode=True)
        found.append(parameter)
    return found
