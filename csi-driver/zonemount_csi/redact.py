"""Strip secrets from CSI messages before they are logged (after kubernetes-csi protosanitizer).

:func:`redact` returns a one-line text form of a message in which

* every field the CSI spec marks ``[(csi_secret) = true]`` (the ``secrets`` maps) keeps its keys
  but its values become ``***stripped***``;
* in every ``map<string, string>`` (volume_context, parameters, publish_context, ...) the
  service-account tokens key ``csi.storage.k8s.io/serviceAccount.tokens`` and any key that
  looks like a credential (token, secret, password, key id) is stripped the same way.

Invariant: the input message is never modified (a copy is sanitised).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from zonemount_contract.keys import SERVICE_ACCOUNT_TOKENS

from ._proto import csi_pb2

STRIPPED = "***stripped***"
_SENSITIVE_WORDS = ("token", "secret", "password", "passwd", "credential", "access_key")


def _sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return key == SERVICE_ACCOUNT_TOKENS or any(word in lowered for word in _SENSITIVE_WORDS)


def _is_secret(field: Any) -> bool:
    options = field.GetOptions()
    return bool(options.Extensions[csi_pb2.csi_secret])


def _repeated(field: Any) -> bool:
    # protobuf >= 5.28 has is_repeated; older releases only have label.
    flag = getattr(field, "is_repeated", None)
    if flag is None:
        flag = field.label == FieldDescriptor.LABEL_REPEATED
    return bool(flag)


def _is_map(field: Any) -> bool:
    return (
        field.message_type is not None
        and field.message_type.GetOptions().map_entry
        and _repeated(field)
    )


def _sanitize(message: Message) -> None:
    """Strip ``message`` in place: maps, nested messages and secret string fields."""
    fields: Any = message.DESCRIPTOR.fields
    for field in fields:
        if _is_map(field):
            _sanitize_map(field, getattr(message, field.name))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _repeated(field):
                for item in getattr(message, field.name):
                    _sanitize(item)
            elif message.HasField(field.name):
                _sanitize(getattr(message, field.name))
        elif _is_secret(field) and field.type == FieldDescriptor.TYPE_STRING:
            _strip_string_field(message, field)


def _sanitize_map(field: Any, mapping: Any) -> None:
    """A ``map<string, string>``: strip secret maps' values and credential-like keys'; a map
    of messages: sanitise each value."""
    value_field = field.message_type.fields_by_name["value"]
    if value_field.type == FieldDescriptor.TYPE_STRING:
        for key in list(mapping):
            if _is_secret(field) or _sensitive_key(key):
                mapping[key] = STRIPPED
    elif value_field.message_type is not None:
        for key in list(mapping):
            _sanitize(mapping[key])


def _strip_string_field(message: Message, field: Any) -> None:
    if _repeated(field):
        values = getattr(message, field.name)
        values[:] = [STRIPPED] * len(values)
    elif getattr(message, field.name):
        setattr(message, field.name, STRIPPED)


def sanitized(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    _sanitize(copy)
    return copy


def redact(message: Message) -> str:
    """One-line text of ``message`` with every secret stripped."""
    return text_format.MessageToString(sanitized(message), as_one_line=True) or "{}"
