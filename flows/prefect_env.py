"""Prefect, quiet and offline by default: call `configure_prefect(root)` before importing prefect.

- its home (SQLite database, results) under the store root, so a demo leaves nothing elsewhere;
- analytics off (otherwise a cold start can log a "database is locked" traceback), logs at
  WARNING and not shipped to the API;
- an ephemeral-server start-up timeout of 90 s, which survives a cold CI machine (default 20 s).
Values already in the environment win, so a user pointing PREFECT_API_URL at a server keeps it.
Ephemeral mode starts one temporary server per process on this SQLite home: concurrent flow
processes on one home can hit "database is locked"; give them a server (PREFECT_API_URL) or
separate homes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def configure_prefect(root: Path) -> None:
    os.environ.setdefault("PREFECT_HOME", str(Path(root) / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect makes no parents
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def no_heartbeat():
    """The per-flow-run heartbeat costs ~1 s a run; short flows turn it off (the environment
    variable cannot express None, only this setting can)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def flows_module(root: str | None, name: str) -> tuple[str, Any]:
    """(store root, the module `reasonloop.flows.<name>`), with Prefect configured for the store
    before the module (and Prefect) is imported; for CLI commands that run a recipe's flows."""
    import importlib

    from reasonloop.flows.cli_model import quiet_transformers
    from reasonloop.storage.layout import resolve_root

    store_root = resolve_root(root)
    configure_prefect(store_root)
    quiet_transformers()
    return str(store_root), importlib.import_module(f"reasonloop.flows.{name}")
