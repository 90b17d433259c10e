"""The replay store: Parquet files published atomically, read through DuckDB views."""

from reasonloop.storage.store import CommitResult, ReplayStore, StoreConfig

__all__ = ["CommitResult", "ReplayStore", "StoreConfig"]
