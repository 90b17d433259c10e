"""What every table shares: the common columns, the table spec, and deterministic ids.

Every row carries a content-hash `id` (so a rerun is idempotent), `run_id`, `created_at`,
`producer`, `config_hash` and `schema_version`. A table's id is a hash of its *id key*: the
fields that make a row the same row. Timestamps and timing fields never enter an id key, or a
rerun would produce new ids and duplicate its data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa

ID_HEX_LEN = 32  # 128-bit blake2b digest, hex

COMMON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("id", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("producer", pa.string(), nullable=False),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("schema_version", pa.int32(), nullable=False),
)
DERIVED_FIELDS = frozenset({"id", "created_at", "schema_version"})
COMMON_DEFAULTS: dict[str, Any] = {"run_id": "ingest", "producer": "user", "config_hash": ""}

# Shared Arrow types.
LOSS_MASK_SPANS = pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32())]))
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
FLOAT_MAP = pa.map_(pa.string(), pa.float64())
STRING_MAP = pa.map_(pa.string(), pa.string())


@dataclass(frozen=True)
class TableSpec:
    """A table: its explicit Arrow schema and the rules rows must follow.

    `fields` are the table's own columns; the common columns are prepended by `schema`.
    """

    name: str
    version: int
    fields: tuple[pa.Field, ...]
    id_key: tuple[str, ...]  # fields hashed (in this order, with the table name) into `id`
    partition_by: str  # hive partition column: <root>/<table>/<col>=<value>/part-*.parquet
    sort_by: tuple[str, ...]  # row order inside compacted files (e.g. by step)
    defaults: dict[str, Any] = field(default_factory=dict)
    enums: dict[str, frozenset[str]] = field(default_factory=dict)
    finite: tuple[str, ...] = ()  # float / float-list / float-map columns that must be finite
    nonnegative: tuple[str, ...] = ()  # integer columns that must be >= 0
    equal_lengths: tuple[tuple[str, str], ...] = ()  # list columns that must have equal length
    texts: tuple[str, ...] = ()  # string columns checked against the text size limit
    nonempty: tuple[str, ...] = ()  # string columns that may not be ""
    # Fields added to the id key only where set: a field that came later (an image reference), so
    # rows without it keep the ids they had.
    id_key_when_set: tuple[str, ...] = ()
    range_columns: tuple[str, ...] = ()  # integer columns whose per-file min/max the commit log keeps (file pruning)
    doc: str = ""

    def id_values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """What `id` hashes for a row: the id key, then each `id_key_when_set` field that is set."""
        extra = tuple((k, row[k]) for k in self.id_key_when_set if row.get(k) is not None)
        return tuple(row[k] for k in self.id_key) + extra

    @cached_property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [*COMMON_FIELDS, *self.fields],
            metadata={"reasonloop.table": self.name, "reasonloop.schema_version": str(self.version)},
        )

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in (*COMMON_FIELDS, *self.fields))

    @cached_property
    def required(self) -> frozenset[str]:
        """Fields a row must supply: not nullable, no default, not derived."""
        return frozenset(
            f.name for f in self.schema
            if not f.nullable and self.default_for(f.name) is None and f.name not in DERIVED_FIELDS
        )  # fmt: skip

    def default_for(self, name: str) -> Any:
        if name in self.defaults:
            return self.defaults[name]
        return COMMON_DEFAULTS.get(name)


def _canonical(value: Any) -> str:
    """A stable text form of a key value: JSON with sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_id(table: str, key_values: tuple[Any, ...]) -> str:
    """The deterministic id of a row: blake2b-128 over the table name and its id-key values."""
    text = "\x1f".join([table, *(_canonical(v) for v in key_values)])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def config_fingerprint(config: Any) -> str:
    """Hash of a config (dataclass, pydantic model or plain dict) stored on every row it makes."""
    if hasattr(config, "model_dump"):
        config = config.model_dump()
    elif hasattr(config, "__dataclass_fields__"):
        from dataclasses import asdict

        config = asdict(config)
    return hashlib.blake2b(_canonical(config).encode(), digest_size=8).hexdigest()
