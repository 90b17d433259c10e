"""Validation: a batch in, good rows (an Arrow table in the table's schema) and rejections out.

Two entry points share one set of vectorized checks:
- `validate_rows` for JSON-like dicts: each value is coerced strictly (a precise reason per row).
- `validate_table` for Arrow tables / polars frames (the producers' fast path): whole columns are
  cast; if a cast fails the batch falls back to `validate_rows` to find the guilty rows.
Derived fields (id, created_at, schema_version) and defaults are filled when a row lacks them.
A rejection keeps the row as received, so nothing is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from reasonloop.schemas.coerce import CoerceError, coerce
from reasonloop.schemas.common import DERIVED_FIELDS, TableSpec, row_id
from reasonloop.schemas.trl_formats import from_trl, is_trl_table

# Partition values become directory names: a conservative alphabet, never "." or "..".
PARTITION_ALPHABET = "A-Za-z0-9._+@:-"
_PARTITION_VALUE = re.compile(rf"[A-Za-z0-9][{PARTITION_ALPHABET}]{{0,127}}")
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Limits:
    """Size limits applied to every row."""

    max_text_bytes: int = 4 * 2**20  # per text field (prompt, completion, ...), in UTF-8 bytes


@dataclass(frozen=True)
class Rejection:
    raw: Any  # the row as received
    reason: str  # what is wrong, in words a user can act on
    validator: str  # which check caught it
    index: int | None = None  # position of the row in the batch it came in (None: not from a batch)


@dataclass
class Validated:
    good: pa.Table
    rejected: list[Rejection]


def partition_problem(column: str, value: Any) -> str | None:
    """Why `value` cannot name a partition directory, or None if it can."""
    if not isinstance(value, str):
        return f"partition value for {column!r} must be a string, got {type(value).__name__}"
    if "/" in value or "\\" in value or "\x00" in value or value in {".", ".."}:
        return f"partition value {value!r:.60} for {column!r} could escape the store root"
    if not _PARTITION_VALUE.fullmatch(value):
        return (
            f"partition value {value!r:.60} for {column!r} must be 1-128 characters from "
            f"[{PARTITION_ALPHABET}] and not start with '.', '-' or another symbol"
        )
    return None


# ---------------------------------------------------------------- the dict path


def _prepare_row(spec: TableSpec, raw: Any, now: datetime, overrides: Mapping[str, Any]) -> dict:
    raw = from_trl(spec.name, raw)
    if not isinstance(raw, dict):
        raise CoerceError(f"row is not an object (got {type(raw).__name__})")
    columns = spec.column_names
    unknown = [k for k in raw if k not in columns]
    if unknown:
        raise CoerceError(f"unknown field(s) {', '.join(map(repr, unknown[:5]))} for table {spec.name!r}")
    row: dict[str, Any] = {}
    for f in spec.schema:
        value = raw.get(f.name)
        if value is None:
            value = overrides.get(f.name, spec.default_for(f.name))
        try:
            row[f.name] = coerce(value, f.type)
        except CoerceError as exc:
            raise CoerceError(f"field {f.name!r}: {exc}") from None
        if row[f.name] is None and not f.nullable and f.name not in DERIVED_FIELDS:
            raise CoerceError(f"missing required field {f.name!r}")
    if row["created_at"] is None:
        row["created_at"] = now
    if row["schema_version"] is None:
        row["schema_version"] = spec.version
    if row["id"] is None:
        row["id"] = row_id(spec.name, spec.id_values(row))
    return row


def validate_rows(
    spec: TableSpec,
    rows: Iterable[Any],
    *,
    limits: Limits = Limits(),
    overrides: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Validated:
    """Validate JSON-like rows. `overrides` fills absent fields (e.g. run_id) before defaults."""
    now = now or datetime.now(timezone.utc)
    overrides = overrides or {}
    prepared: list[dict] = []
    raws: list[Any] = []
    indices: list[int] = []
    rejected: list[Rejection] = []
    for i, raw in enumerate(rows):
        try:
            prepared.append(_prepare_row(spec, raw, now, overrides))
        except CoerceError as exc:
            rejected.append(Rejection(raw, str(exc), "row", i))
            continue
        except Exception as exc:  # whatever a row does to a validator (nesting too deep, ...), it is data
            rejected.append(Rejection(raw, f"cannot validate ({type(exc).__name__}: {str(exc)[:200]})", "row", i))
            continue
        raws.append(raw)
        indices.append(i)
    table = pa.Table.from_pylist(prepared, schema=spec.schema)
    checked = check_table(spec, table, limits, raws, indices)
    return Validated(checked.good, sorted(rejected + checked.rejected, key=lambda r: r.index or 0))


# ---------------------------------------------------------------- the Arrow path


def _constant(value: Any, arrow_type: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, arrow_type), n) if value is not None else pa.nulls(n, arrow_type)


def validate_table(
    spec: TableSpec,
    table: pa.Table,
    *,
    limits: Limits = Limits(),
    overrides: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Validated:
    """Validate a whole Arrow table (columns cast at once; rows only inspected if a cast fails)."""
    now = now or datetime.now(timezone.utc)
    overrides = overrides or {}
    if is_trl_table(spec.name, table.schema):  # a TRL dataset: mapped row by row
        return validate_rows(spec, table.to_pylist(), limits=limits, overrides=overrides, now=now)
    unknown = [c for c in table.column_names if c not in spec.column_names]
    if unknown:
        reason = f"unknown column(s) {', '.join(map(repr, unknown[:5]))} for table {spec.name!r}"
        return Validated(
            spec.schema.empty_table(), [Rejection(r, reason, "row", i) for i, r in enumerate(table.to_pylist())]
        )
    n = table.num_rows
    columns = []
    try:
        for f in spec.schema:
            if f.name in table.column_names:
                column = table.column(f.name).cast(f.type, safe=True)
                default = overrides.get(f.name, spec.default_for(f.name))
                if column.null_count and default is not None:  # a null takes the default, as in the dict path
                    column = pc.fill_null(column, pa.scalar(default, f.type))
            elif f.name == "created_at":
                column = _constant(now, f.type, n)
            elif f.name == "schema_version":
                column = _constant(spec.version, f.type, n)
            else:
                default = overrides.get(f.name, spec.default_for(f.name))
                column = _constant(default, f.type, n)
            columns.append(column)
    except (pa.ArrowException, ValueError, TypeError):  # any column that does not cast: find the rows
        return validate_rows(spec, table.to_pylist(), limits=limits, overrides=overrides, now=now)
    typed = pa.Table.from_arrays(columns, schema=spec.schema)
    if "id" not in table.column_names:
        names = spec.id_key + spec.id_key_when_set
        rows = (
            dict(zip(names, key, strict=True))
            for key in zip(*(typed.column(k).to_pylist() for k in names), strict=True)
        )
        ids = pa.array([row_id(spec.name, spec.id_values(row)) for row in rows] if n else [], pa.string())
        typed = typed.set_column(0, spec.schema.field("id"), ids)
    return check_table(spec, typed, limits, None)


# ---------------------------------------------------------------- vectorized checks

RowReason = Callable[[int], str]


def _np_mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _numpy(array: pa.Array) -> np.ndarray:
    """A primitive array as numpy (zero-copy when it has no nulls; nulls become 0, which no
    numeric rule rejects — null checks are separate)."""
    if array.null_count:
        array = pc.fill_null(array, 0)
    return array.to_numpy(zero_copy_only=False)


def _children_mask(column: pa.Array, child_bad: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Rows of a list/map column with at least one child for which `child_bad` is true."""
    child = column.items if pa.types.is_map(column.type) else column.values
    flat = child_bad(_numpy(child))
    if not flat.any():
        return np.zeros(len(column), dtype=bool)
    bad = np.concatenate([[0], np.cumsum(flat)])
    offsets = column.offsets.to_numpy()
    return (bad[offsets[1:]] - bad[offsets[:-1]]) > 0


def _checks(spec: TableSpec, t: pa.Table, limits: Limits) -> Iterable[tuple[str, np.ndarray, RowReason]]:
    """(validator, bad-row mask, reason for row i) for every rule of `spec`. Order matters:
    a row gets the reason of the first rule it breaks."""
    col = t.column
    for f in spec.schema:
        if not f.nullable and col(f.name).null_count:
            yield "required", _np_mask(pc.is_null(col(f.name))), lambda i, n=f.name: f"missing required field {n!r}"
    versions = col("schema_version")
    yield (
        "schema_version",
        _np_mask(pc.not_equal(versions, spec.version)),
        lambda i: f"schema_version {versions[i].as_py()} is not table {spec.name!r}'s version {spec.version}",
    )
    ids = col("id")
    yield (
        "id",
        ~_np_mask(pc.match_substring_regex(ids, f"^{_ID.pattern}$")),
        lambda i: f"id {ids[i].as_py()!r:.60} is not a 32-hex-digit content hash",
    )
    parts = col(spec.partition_by)
    bad_parts = ~_np_mask(pc.match_substring_regex(parts, f"^{_PARTITION_VALUE.pattern}$"))
    yield "partition", bad_parts, lambda i: partition_problem(spec.partition_by, parts[i].as_py()) or "bad partition"
    for name in spec.nonempty:
        yield "nonempty", _np_mask(pc.equal(col(name), "")), lambda i, n=name: f"field {n!r} is empty"
    for name, allowed in spec.enums.items():
        values = col(name)
        bad = _np_mask(pc.invert(pc.is_in(values, pa.array(sorted(allowed)))))
        yield (
            "enum",
            bad & _np_mask(pc.is_valid(values)),
            lambda i, n=name, v=values, a=allowed: f"{n} {v[i].as_py()!r:.40} is not one of {', '.join(sorted(a))}",
        )
    yield from _numeric_checks(spec, t)
    for name in spec.texts:
        sizes = pc.binary_length(col(name))
        yield (
            "size",
            _np_mask(pc.greater(sizes, limits.max_text_bytes)),
            lambda i, n=name, s=sizes: (
                f"text field {n!r} is {s[i].as_py()} bytes, over the limit of {limits.max_text_bytes} "
                "(raise Limits.max_text_bytes to accept it)"
            ),
        )


def _numeric_checks(spec: TableSpec, t: pa.Table) -> Iterable[tuple[str, np.ndarray, RowReason]]:
    def column(name: str) -> pa.Array:
        return t.column(name).combine_chunks()

    for name in spec.finite:
        values = column(name)
        if pa.types.is_floating(values.type):
            bad = ~np.isfinite(_numpy(values))
        else:
            bad = _children_mask(values, lambda v: ~np.isfinite(v))
        yield "finite", bad, lambda i, n=name: f"non-finite value (NaN or inf) in {n!r}"
    for name in spec.nonnegative:
        values = column(name)
        bad = _children_mask(values, lambda v: v < 0) if pa.types.is_list(values.type) else _numpy(values) < 0
        yield "nonnegative", bad, lambda i, n=name: f"{n!r} has a negative value"
    for left, right in spec.equal_lengths:
        a, b = (_numpy(pc.list_value_length(t.column(c)).combine_chunks()) for c in (left, right))
        yield "lengths", a != b, lambda i, x=left, y=right, a=a, b=b: f"{x} has {a[i]} values but {y} has {b[i]}"
    if "logprobs" in t.column_names:
        bad = _children_mask(column("logprobs"), lambda v: v > 0)
        yield "logprobs", bad, lambda i: "logprobs must be <= 0 (a log-probability above 0)"
    for name in ("loss_mask_spans", "kl_mask_spans"):
        if name not in t.column_names or t.column(name).null_count == t.num_rows:
            continue
        spans = column(name)
        starts, ends = spans.values.field("start"), spans.values.field("end")
        flat = _np_mask(pc.or_(pc.or_(pc.less(starts, 0), pc.greater(starts, ends)), pc.is_null(ends)))
        bad = np.concatenate([[0], np.cumsum(flat)])
        offsets = spans.offsets.to_numpy()
        yield (
            "spans",
            (bad[offsets[1:]] - bad[offsets[:-1]]) > 0,
            lambda i, n=name: f"{n} has a span with start < 0, start > end, or no end",
        )


def check_table(
    spec: TableSpec, table: pa.Table, limits: Limits, raws: list[Any] | None, indices: list[int] | None = None
) -> Validated:
    """Apply every rule of `spec` to a typed table; rows that break one are rejected. `raws` and
    `indices`: each table row's input as received and its position in the input batch."""
    n = table.num_rows
    if n == 0:
        return Validated(table, [])
    reasons: dict[int, tuple[str, str]] = {}
    for validator, mask, reason in _checks(spec, table, limits):
        if not mask.any():
            continue
        for i in np.flatnonzero(mask):
            reasons.setdefault(int(i), (validator, reason(int(i))))
    if not reasons:
        return Validated(table, [])
    rejected = [
        Rejection(
            raws[i] if raws is not None else table.slice(i, 1).to_pylist()[0], reason, validator,
            indices[i] if indices is not None else i,
        )
        for i, (validator, reason) in sorted(reasons.items())
    ]  # fmt: skip
    keep = np.ones(n, dtype=bool)
    keep[list(reasons)] = False
    return Validated(table.filter(pa.array(keep)), rejected)
