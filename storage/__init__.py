"""The replay store: Parquet files published atomically, read through DuckDB views."""

from storage.store import CommitResult, ReplayStore, StoreConfig

__all__ = ["CommitResult", "ReplayStore", "StoreConfig"]
