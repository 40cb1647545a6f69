"""Request-body schemas of the OpenAPI document, generated from river_runner.wire's models.

pydantic writes JSON Schema 2020-12; the document is OpenAPI 3.0, whose schema dialect
says `nullable: true` instead of a `null` type, `exclusiveMinimum: true` beside `minimum`
instead of a number, and has no `const`. This module rewrites those few spellings and
moves each model's `$defs` into `components/schemas`, so the host validates with exactly
the shapes it publishes.
"""

from __future__ import annotations

from typing import Any

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


def request_schemas(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """components/schemas entries for `models` and every model they nest."""
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
        for name, nested in schema.pop("$defs", {}).items():
            found[name] = to_openapi30(nested)
        found[model.__name__] = to_openapi30(schema)
    return found
