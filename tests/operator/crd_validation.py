"""Validate objects against a CRD the way the API server does, closely enough for tests.

Order as in kube-apiserver: defaulting (``default``), structural OpenAPI validation (here:
``jsonschema`` Draft 4 with ``additionalProperties: false`` on every object that does not
preserve unknown fields, which is what ``kubectl apply --validate=strict`` / server-side
field validation ``Strict`` gives), then CEL ``x-kubernetes-validations`` evaluated with
real CEL (cel-python). Transition rules (those using ``oldSelf``) run only on updates, as in
Kubernetes. Returns a list of error strings; empty means valid.

Errors are worded as kube-apiserver words them (field paths without a leading dot), so an
example's ``# expect:`` text is what ``kubectl apply`` prints against a real cluster:

    spec.baseName: Invalid value: "MyBucket": spec.baseName in body should match '^...$'
    spec.deletionPolicy: Unsupported value: "Orphan": supported values: "Retain", "Delete"
    unknown field "spec.deletionPolcy"             (strict decoding error / Warn-mode warning)
    spec.region: Required value
    spec: Invalid value: "object": <the CEL rule's message>
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def load_crd(kind: str) -> dict[str, Any]:
    for path in sorted(CRDS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return dict(doc)
    raise KeyError(kind)


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Close every object schema (unknown fields are errors, like strict field validation)."""
    out = copy.deepcopy(schema)

    def walk(node: dict[str, Any], path: str) -> None:
        closable = node.get("type") == "object" and "properties" in node
        if closable and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(out, "")
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                value[key] = apply_defaults(child, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


_ENV = celpy.Environment()


def cel_rules(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (rule, message) in the schema tree (for compile checks)."""
    rules = [(r["rule"], r.get("message", "")) for r in schema.get("x-kubernetes-validations", [])]
    for child in schema.get("properties", {}).values():
        rules.extend(cel_rules(child))
    if isinstance(schema.get("items"), dict):
        rules.extend(cel_rules(schema["items"]))
    return rules


def _eval(rule: str, value: Any, old: Any) -> bool:
    program = _ENV.program(_ENV.compile(rule))
    activation = {"self": celpy.json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    return bool(program.evaluate(activation))


def _cel_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def run_cel(schema: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue  # transition rules apply to updates only
        if not _eval(rule["rule"], value, old if transition else None):
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            errors.append(f'{path}: Invalid value: "{_cel_type(value)}": {message}')
    if isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if key in value:
                child_old = old.get(key) if isinstance(old, dict) else None
                errors.extend(run_cel(child, value[key], child_old, _join(path, key)))
    return errors


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _quote(value: Any) -> str:
    """Go's %q for strings, JSON for the rest (what the API server prints)."""
    import json

    return json.dumps(value)


def api_server_message(error: jsonschema.ValidationError) -> str:
    """One jsonschema error in kube-apiserver's words (apimachinery field.Error)."""
    path = ""
    for part in error.absolute_path:
        path = _join(path, part)
    v, arg = error.instance, error.validator_value
    match error.validator:
        case "pattern":
            return f"{path}: Invalid value: {_quote(v)}: {path} in body should match '{arg}'"
        case "enum":
            allowed = ", ".join(_quote(a) for a in arg)
            return f"{path}: Unsupported value: {_quote(v)}: supported values: {allowed}"
        case "additionalProperties":
            known = set(error.schema.get("properties", {}))
            return ", ".join(f'unknown field "{_join(path, k)}"' for k in v if k not in known)
        case "required":
            missing = [k for k in arg if k not in v]
            return ", ".join(f"{_join(path, k)}: Required value" for k in missing)
        case "minLength":
            return (
                f"{path}: Invalid value: {_quote(v)}: {path} in body should be at least "
                f"{arg} chars long"
            )
        case "maxLength":
            return f"{path}: Too long: may not be more than {arg} bytes"
        case "minimum":
            return (
                f"{path}: Invalid value: {_quote(v)}: {path} in body should be greater than "
                f"or equal to {arg}"
            )
        case "maximum":
            return (
                f"{path}: Invalid value: {_quote(v)}: {path} in body should be less than "
                f"or equal to {arg}"
            )
        case "maxItems":
            return f"{path}: Too many: {len(v)}: must have at most {arg} items"
        case "type":
            kind = type(v).__name__
            return f'{path}: Invalid value: "{kind}": {path} in body must be of type {arg}'
        case _:
            return f"{path}: Invalid value: {_quote(v)}: {error.message}"


def validate(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    crd = load_crd(obj["kind"])
    schema = schema_of(crd)
    obj = apply_defaults(schema, copy.deepcopy(obj))
    if old is not None:
        old = apply_defaults(schema, copy.deepcopy(old))
    validator = jsonschema.Draft4Validator(strict(schema))
    errors = [api_server_message(e) for e in validator.iter_errors(obj)]
    if errors:
        return errors  # like the API server: CEL runs only on schema-valid objects
    return run_cel(schema, obj, old, "")
