"""Kubernetes resource quantities (``1Ti``, ``1024Gi``, ``500M``): parse, compare, canonicalise.

The API server stores a quantity in its canonical form, not as written: ``1024Gi`` comes back
as ``1Ti``, ``1000M`` as ``1G``. Comparing the strings therefore reports a difference that is
not there (and a reconcile that patches on it patches forever). Invariants here:

* :func:`parse` turns a quantity into its exact value (a :class:`~decimal.Decimal`, no float
  rounding); :func:`same` compares two quantities by value; bad input raises ``ValueError``
  naming the quantity.
* :func:`canonical` is the server's form for the integer quantities the operator writes
  (binary suffixes stay binary, decimal stay decimal, the largest suffix that keeps the
  number whole wins); the kmock test tier uses it to store quantities like a real server.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
DECIMAL = {"n": -3, "u": -2, "m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?[0-9]+)|(?P<dec>[numkMGTPE]?))$"
)


def _split(quantity: str) -> tuple[Decimal, str, str]:
    match = _QUANTITY.match(quantity.strip())
    if match is None:
        raise ValueError(
            f"{quantity!r} is not a Kubernetes quantity: write a number with an optional "
            "suffix, e.g. 1Ti, 500Gi or 100G"
        )
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity") from exc
    if match["bin"]:
        return number, "binary", match["bin"]
    if match["exp"]:
        return number, "exponent", match["exp"]
    return number, "decimal", match["dec"] or ""


def parse(quantity: str) -> Decimal:
    """The exact value of ``quantity`` (``"1Ti"`` -> ``Decimal(1099511627776)``)."""
    number, kind, suffix = _split(quantity)
    if kind == "binary":
        return number * (Decimal(1024) ** BINARY[suffix])
    if kind == "exponent":
        return number.scaleb(int(suffix[1:]))
    return number * (Decimal(1000) ** DECIMAL[suffix])


def same(a: str | None, b: str | None) -> bool:
    """True when both quantities have the same value (``None`` equals only ``None``)."""
    if a is None or b is None:
        return a is b
    try:
        return parse(a) == parse(b)
    except ValueError:
        return a == b


def canonical(quantity: str) -> str:
    """The API server's form of a whole-number quantity (``1024Gi`` -> ``1Ti``).

    Fractions and exponent forms are returned unchanged (the operator never writes them).
    """
    kind = _split(quantity)[1]
    value = parse(quantity)
    if kind == "exponent" or value != value.to_integral_value() or value < 0:
        return quantity
    whole = int(value)
    if kind == "binary":
        base, table = 1024, sorted(BINARY.items(), key=lambda kv: -kv[1])
    else:
        base, table = (
            1000,
            sorted(((s, p) for s, p in DECIMAL.items() if p > 0), key=lambda kv: -kv[1]),
        )
    for suffix, power in table:
        if whole and whole % (base**power) == 0:
            return f"{whole // base**power}{suffix}"
    return str(whole)
