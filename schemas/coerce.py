"""Strict conversion of one Python value to an Arrow type, with a reason when it fails.

JSON-like input (dicts from JSONL, the Python API) is checked value by value so that a bad row
gets a precise reason ("field 'reward': expected a number, got str") instead of failing the
whole batch. Numbers are not parsed from strings here: CSV text is decoded by `decode_text`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

_INT_RANGES = {
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
}


class CoerceError(ValueError):
    """A value that does not fit its column; the message is the rejection reason."""


def _type_name(value: Any) -> str:
    return type(value).__name__


def _string(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CoerceError(f"invalid UTF-8 at byte {exc.start}") from None
    if not isinstance(value, str):
        raise CoerceError(f"expected a string, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. JSON "\ud800"
        raise CoerceError(f"invalid UTF-8 (unpaired surrogate at char {exc.start})") from None
    return value


def _integer(value: Any, arrow_type: pa.DataType) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise CoerceError(f"expected an integer, got {_type_name(value)} {value!r:.40}")
    low, high = _INT_RANGES[arrow_type]
    if not low <= value <= high:
        raise CoerceError(f"integer {value} out of range for {arrow_type}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CoerceError(f"expected a number, got {_type_name(value)} {value!r:.40}")
    return float(value)


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise CoerceError(f"expected an ISO-8601 timestamp, got {value!r:.40}") from None
    if not isinstance(value, datetime):
        raise CoerceError(f"expected a timestamp, got {_type_name(value)}")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def coerce(value: Any, arrow_type: pa.DataType) -> Any:
    """`value` converted for a column of `arrow_type`; raises CoerceError with the reason."""
    if value is None:
        return None
    if pa.types.is_string(arrow_type):
        return _string(value)
    if arrow_type in _INT_RANGES:
        return _integer(value, arrow_type)
    if pa.types.is_floating(arrow_type):
        return _number(value)
    if pa.types.is_boolean(arrow_type):
        if not isinstance(value, bool):
            raise CoerceError(f"expected true/false, got {_type_name(value)}")
        return value
    if pa.types.is_timestamp(arrow_type):
        return _timestamp(value)
    if pa.types.is_map(arrow_type):
        if not isinstance(value, dict):
            raise CoerceError(f"expected an object (map), got {_type_name(value)}")
        out = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise CoerceError(f"map key {key!r} is not a string")
            try:
                out.append((_string(key), coerce(item, arrow_type.item_type)))
            except CoerceError as exc:
                raise CoerceError(f"map value {key!r:.40}: {exc}") from None
        return out
    if pa.types.is_list(arrow_type):
        if not isinstance(value, (list, tuple)):
            raise CoerceError(f"expected a list, got {_type_name(value)}")
        out = []
        for i, item in enumerate(value):
            if item is None:
                raise CoerceError(f"list element {i} is null")
            try:
                out.append(coerce(item, arrow_type.value_type))
            except CoerceError as exc:
                raise CoerceError(f"list element {i}: {exc}") from None
        return out
    if pa.types.is_struct(arrow_type):
        if not isinstance(value, dict):
            raise CoerceError(f"expected an object, got {_type_name(value)}")
        names = {arrow_type.field(i).name for i in range(arrow_type.num_fields)}
        extra = set(value) - names
        if extra:
            raise CoerceError(f"unexpected key(s) {sorted(extra)}; expected {sorted(names)}")
        return {
            f.name: coerce(value.get(f.name), f.type)
            for f in (arrow_type.field(i) for i in range(arrow_type.num_fields))
        }
    raise CoerceError(f"unsupported column type {arrow_type}")  # a schema bug, not bad data


def decode_text(text: str, arrow_type: pa.DataType) -> Any:
    """Decode one CSV cell: empty is null, numbers and booleans are parsed, nested types are JSON."""
    if text == "":
        return None
    if pa.types.is_string(arrow_type) or pa.types.is_timestamp(arrow_type):
        return text
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        try:
            return int(text) if pa.types.is_integer(arrow_type) else float(text)
        except ValueError:
            raise CoerceError(f"expected a number, got {text!r:.40}") from None
    if pa.types.is_boolean(arrow_type):
        lowered = text.strip().lower()
        if lowered not in {"true", "false", "1", "0"}:
            raise CoerceError(f"expected true/false, got {text!r:.40}")
        return lowered in {"true", "1"}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise CoerceError(f"expected JSON for a {arrow_type} cell, got {text!r:.40}") from None
