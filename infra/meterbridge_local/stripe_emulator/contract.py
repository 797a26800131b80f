"""Opt-in contract mode: every request and answer checked against Stripe's published OpenAPI spec.

Off by default, because the emulator's own tests send bad requests on purpose. Turned on (with
a spec, normally the project's trimmed copy tests/fixtures/stripe_openapi_trimmed.json made by
scripts/trim_openapi.py), the emulator records each operation it served and every way a request
or a response strays from the spec: unknown operation, unknown or mistyped parameter, missing
required field, null where the spec says not nullable, a value outside an enum, a field the
spec does not have.

The validator is written by hand for the subset of JSON Schema Stripe's spec uses for these
operations ($ref, type, nullable, enum, required, properties, additionalProperties, items,
anyOf/oneOf, maxLength), so the tests need no validator dependency; `format` is not checked.
A schema's `x-served-beyond-spec` (set by the trim script) lists fields Stripe's own example
objects carry although the spec omits them: tolerated in answers.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wire import decode_form

Schema = dict[str, Any]
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_FORM_TYPES = {"integer", "number", "boolean"}


@dataclass(frozen=True)
class _Mode:
    form: bool  # values arrive as strings (v1 form encoding)
    strict: bool  # fields the schema does not name are errors


class SchemaChecker:
    """Validates values against the spec's schemas; returns readable errors, never raises."""

    def __init__(self, schemas: dict[str, Schema]) -> None:
        self._schemas = schemas

    def errors(
        self, value: Any, schema: Schema, where: str, *, form: bool = False, strict: bool = False
    ) -> list[str]:
        """`form`: a v1 form-encoded request; `strict`: an answer, where a field the spec does
        not name is an error (the emulator must not invent fields)."""
        found: list[str] = []
        self._check(value, schema, where, found, _Mode(form, strict))
        return found

    def _resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self._schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _check(self, value: Any, schema: Schema, where: str, found: list[str], mode: _Mode) -> None:
        if schema.get("$ref", "").endswith("/notification_event_data") and isinstance(value, dict):
            self._check_event_object(value, where, found, mode)
        schema = self._resolve(schema)
        if value is None:
            if not schema.get("nullable"):
                found.append(f"{where}: null, but the spec does not allow null")
            return
        alternatives = schema.get("anyOf") or schema.get("oneOf")
        if alternatives is not None:
            attempts: list[list[str]] = []
            for alternative in alternatives:
                errors: list[str] = []
                self._check(value, alternative, where, errors, mode)
                if not errors:
                    return
                attempts.append(errors)
            found.append(f"{where}: matches none of {len(alternatives)} alternatives")
            nearest: list[str] = min(attempts, key=len) if attempts else []
            found.extend(nearest)  # the nearest miss says most about what is wrong
            return
        expected = schema.get("type")
        if expected is not None and not _has_type(value, expected, form=mode.form):
            found.append(f"{where}: {_describe(value)}, but the spec says {expected}")
            return
        if "enum" in schema and _plain(value, expected, form=mode.form) not in schema["enum"]:
            found.append(f"{where}: {value!r} is not one of {schema['enum']}")
        if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
            found.append(f"{where}: longer than {schema['maxLength']} characters")
        if isinstance(value, dict):
            self._check_object(value, schema, where, found, mode)
        elif isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                self._check(item, schema["items"], f"{where}[{index}]", found, mode)

    def _check_event_object(
        self, data: dict[str, Any], where: str, found: list[str], mode: _Mode
    ) -> None:
        """An event's `data.object` is typed only `object` in the spec: check it as the
        resource it names (an invoice in invoice.created), which is what consumers read."""
        obj = data.get("object")
        name = obj.get("object") if isinstance(obj, dict) else None
        if isinstance(name, str) and name in self._schemas:
            self._check(obj, self._schemas[name], f"{where}.object", found, mode)

    def _check_object(
        self, value: dict[str, Any], schema: Schema, where: str, found: list[str], mode: _Mode
    ) -> None:
        properties: dict[str, Schema] = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                found.append(f"{where}.{name}: required by the spec, missing")
        extra = schema.get("additionalProperties")
        tolerated = schema.get("x-served-beyond-spec") or ()
        for name, item in value.items():
            if name in properties:
                self._check(item, properties[name], f"{where}.{name}", found, mode)
            elif isinstance(extra, dict):
                self._check(item, extra, f"{where}.{name}", found, mode)
            elif extra is False or (mode.strict and properties and name not in tolerated):
                found.append(f"{where}.{name}: not in the spec")


def _has_type(value: Any, expected: str, *, form: bool) -> bool:
    if form and isinstance(value, str) and expected in _FORM_TYPES:
        if expected == "integer":
            return bool(_INTEGER.match(value))
        if expected == "number":
            return bool(_NUMBER.match(value))
        return value in ("true", "false")
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _plain(value: Any, expected: Any, *, form: bool) -> Any:
    """A form-encoded enum value compared as the type the spec names (e.g. "true" → True)."""
    if form and isinstance(value, str) and expected == "boolean":
        return value == "true"
    return value


def _describe(value: Any) -> str:
    kind = type(value).__name__
    shown = json.dumps(value)[:60] if isinstance(value, str | int | float | bool) else kind
    return f"{shown} ({kind})"


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: Schema


@dataclass(frozen=True)
class Violation:
    """One way a request or an answer differs from Stripe's spec."""

    method: str
    path: str
    operation: str  # "METHOD /template" from the spec, or "" when the spec has none
    side: str  # "request" | "response"
    message: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.side}] {self.message}"


class Contract:
    """Stripe's operations from an OpenAPI document, matched by method and concrete path."""

    def __init__(self, spec: Schema) -> None:
        self.spec = spec
        self.checker = SchemaChecker(spec.get("components", {}).get("schemas", {}))
        operations = []
        for template, item in spec.get("paths", {}).items():
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            for method, operation in item.items():
                if method in ("get", "post", "delete"):
                    operations.append(
                        Operation(method.upper(), template, re.compile(regex), operation)
                    )
        # A literal segment beats a parameter: /v1/invoices/create_preview before /{invoice}.
        self._operations = sorted(operations, key=lambda op: op.template.count("{"))

    @classmethod
    def load(cls, path: str | Path) -> Contract:
        return cls(json.loads(Path(path).read_text()))

    def operation(self, method: str, path: str) -> Operation | None:
        for operation in self._operations:
            if operation.method == method and operation.pattern.match(path):
                return operation
        return None

    def request_errors(self, operation: Operation, query: str, body: str) -> list[str]:
        found: list[str] = []
        op = operation.spec
        query_params = [p for p in op.get("parameters", ()) if p.get("in") == "query"]
        query_schema: Schema = {
            "type": "object",
            "properties": {p["name"]: p.get("schema", {}) for p in query_params},
            "required": [p["name"] for p in query_params if p.get("required")],
            "additionalProperties": False,
        }
        content = (op.get("requestBody") or {}).get("content") or {}
        if operation.method == "DELETE" and not query_params and query:
            # stripe-python sends a DELETE's parameters in the query string; Stripe reads them
            # as the body the spec describes.
            body, query = query, ""
        if query or query_schema["required"]:
            found += self.checker.errors(decode_form(query), query_schema, "query", form=True)
        if "application/json" in content:
            try:
                decoded = json.loads(body) if body else {}
            except ValueError:
                return [*found, "body: not JSON"]
            found += self.checker.errors(decoded, content["application/json"]["schema"], "body")
        elif "application/x-www-form-urlencoded" in content:
            schema = content["application/x-www-form-urlencoded"]["schema"]
            found += self.checker.errors(decode_form(body), schema, "body", form=True)
        elif body and body.strip() != "{}":  # the SDK sends `{}` to bodiless v2 operations
            found.append("body: the spec defines no request body for this operation")
        return found

    def response_errors(self, operation: Operation, status: int, body: bytes) -> list[str]:
        responses = operation.spec.get("responses", {})
        answer = responses.get(str(status)) or responses.get("default")
        if answer is None:
            return [f"status {status}: not an answer the spec defines"]
        schema = ((answer.get("content") or {}).get("application/json") or {}).get("schema")
        if schema is None:
            return []
        try:
            decoded = json.loads(body)
        except ValueError:
            return ["body: not JSON"]
        return self.checker.errors(decoded, schema, "response", strict=True)


class ContractRecorder:
    """Checks each exchange against the contract and keeps what it found, thread-safe."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self._lock = threading.Lock()
        self._violations: list[Violation] = []
        self._operations: set[str] = set()

    def check(  # noqa: PLR0917
        self, method: str, path: str, query: str, body: str, status: int, answer: bytes
    ) -> None:
        operation = self.contract.operation(method, path)
        found: list[Violation] = []
        if operation is None:
            found.append(
                Violation(
                    method,
                    path,
                    "",
                    "request",
                    "no such operation in the spec (if "
                    "Stripe has it, add it to scripts/trim_openapi.py and re-run the script)",
                )
            )
        else:
            name = f"{method} {operation.template}"
            found += [
                Violation(method, path, name, "request", message)
                for message in self.contract.request_errors(operation, query, body)
            ]
            found += [
                Violation(method, path, name, "response", message)
                for message in self.contract.response_errors(operation, status, answer)
            ]
        with self._lock:
            if operation is not None:
                self._operations.add(f"{method} {operation.template}")
            self._violations += found

    def check_webhook(self, event: dict[str, Any]) -> None:
        """A v1 snapshot event as delivered to an endpoint (the spec's `event` schema)."""
        schema = self.contract.checker.errors(
            event, {"$ref": "#/components/schemas/event"}, "event", strict=True
        )
        found = [
            Violation("POST", "(webhook)", f"event {event.get('type')}", "response", message)
            for message in schema
        ]
        with self._lock:
            self._violations += found

    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def operations(self) -> set[str]:
        with self._lock:
            return set(self._operations)

    def clear(self) -> None:
        with self._lock:
            self._violations.clear()
            self._operations.clear()
