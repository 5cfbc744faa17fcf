"""Strict decoding of JSON request objects: unknown fields, missing fields and wrong types are
refused with stable codes (422 unknown_field / field_missing / wrong_type, naming the field).

Types are exact: ``int`` refuses bool and float (amounts are JSON integers only), ``str`` refuses
everything but strings.
"""
from __future__ import annotations

from typing import Any, Mapping

from shared.errors import Unprocessable


def _fail(detail: str, code: str, field: str) -> Unprocessable:
    return Unprocessable(detail, code=code, extra={"field": field})


def strict_object(value: Any, required: Mapping[str, type], optional: Mapping[str, type] | None = None
                  ) -> dict[str, Any]:
    """``value`` as a dict with exactly the named fields, each of its exact type."""
    optional = optional or {}
    if type(value) is not dict:
        raise _fail("the body must be a JSON object", "wrong_type", "body")
    for name in value:
        if name not in required and name not in optional:
            raise _fail(f"unknown field {name!r}", "unknown_field", name)
    for name in required:
        if name not in value:
            raise _fail(f"missing field {name!r}", "field_missing", name)
    for name, item in value.items():
        kind = required.get(name) or optional[name]
        if type(item) is not kind:
            raise _fail(f"{name} must be of type {kind.__name__}", "wrong_type", name)
    return value


def invalid(field: str, detail: str, code: str = "field_invalid") -> Unprocessable:
    return _fail(detail, code, field)
