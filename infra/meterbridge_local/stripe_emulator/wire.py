"""Stripe's v1 wire format: bracketed form keys in, JSON out, and typed parameter reads."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from .errors import invalid_param, required

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(raw: str) -> dict[str, Any]:
    """Turn `a[b][0][c]=x&e[]=y` into nested dicts and lists, as Stripe's API reads them."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head, *_KEY_PART.findall("[" + rest)] if rest else [head]
        node: Any = root
        for index, raw_part in enumerate(parts):
            # `a[]=x` appends: stored under a growing numeric key, listified below.
            part = raw_part or str(len(node))
            if index == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def to_json(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def as_int(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_param(f"Invalid integer: {value}", param=name) from None


def need_int(params: dict[str, Any], name: str) -> int:
    value = as_int(params, name)
    if value is None:
        raise required(name)
    return value


def need_str(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or value == "":
        raise required(name)
    return value


def as_bool(params: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise invalid_param(f"Invalid boolean: {value}", param=name)


def as_dict(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid_param(f"Invalid object: {name}", param=name)
    return value


def as_list(params: dict[str, Any], name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return list(value.values())
    if not isinstance(value, list):
        return [value]
    return value


def merge_metadata(current: dict[str, str], update: dict[str, Any]) -> dict[str, str]:
    """Stripe semantics: keys set to "" are removed, others replaced."""
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged
