"""Where things live under a store root, and how files are published atomically.

    <root>/<table>/<col>=<value>/part-<batch hash>.parquet      committed batches ("deltas")
    <root>/<table>/_compacted/<col>=<value>/c-<uuid>.parquet    compaction output
    <root>/<table>/_manifest.json                               which compacted files are live,
                                                                which deltas they absorbed
    .tmp-<host>-<pid>-<uuid>.inprogress                         a file being written

A temp name never ends in `.parquet`, so a glob or listing never picks up a partial file; a
finished file is published with one link/rename, which is atomic on a local filesystem.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = ".reasonloop"
ROOT_ENV = "REASONLOOP_HOME"
COMPACTED_DIR = "_compacted"
MANIFEST = "_manifest.json"
TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".inprogress"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The store root: the argument, else $REASONLOOP_HOME, else ./.reasonloop."""
    chosen = root if root is not None else os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


def partition_dir_name(column: str, value: str) -> str:
    return f"{column}={value}"


def host_name() -> str:
    """This machine's name, in the alphabet of a file name (a temp name carries it)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


@dataclass(frozen=True)
class TempOwner:
    host: str | None  # None: a name from before hosts were recorded (treated as this host's)
    pid: int


def temp_path(directory: Path) -> Path:
    """A fresh temp name in `directory`. Host and pid let `vacuum` tell a live writer from a dead
    one: a pid means something only on its own host (on a shared filesystem, another machine's
    writer may be alive with any pid)."""
    return directory / f"{TMP_PREFIX}{host_name()}-{os.getpid()}-{uuid.uuid4().hex}{TMP_SUFFIX}"


def temp_owner(name: str) -> TempOwner | None:
    if not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)):
        return None
    parts = name[len(TMP_PREFIX) : -len(TMP_SUFFIX)].rsplit("-", 2)  # host names may hold '-' (escaped as '_')
    try:
        if len(parts) == 3:
            return TempOwner(parts[0], int(parts[1]))
        return TempOwner(None, int(parts[0]))
    except ValueError:
        return None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path, *, exclusive: bool, sync: bool) -> bool:
    """Move a finished temp file to its final name. With `exclusive`, an existing final file
    wins (put-if-absent via link) and False is returned; the temp is removed either way."""
    if sync:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    if exclusive:
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, final)
    if sync:
        fsync_dir(final.parent)
    return True


def iter_delta_files(table_dir: Path, partition: str | None = None) -> Iterator[Path]:
    """Committed (uncompacted) files of a table, optionally of one partition directory."""
    if not table_dir.is_dir():
        return
    dirs = (
        [table_dir / partition]
        if partition
        else [Path(e.path) for e in os.scandir(table_dir) if e.is_dir() and "=" in e.name]
    )
    for d in sorted(dirs):
        if not d.is_dir():
            continue
        names = sorted(e.name for e in os.scandir(d) if e.name.startswith("part-") and e.name.endswith(".parquet"))
        for name in names:
            yield d / name


def iter_temp_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(TMP_PREFIX):
                yield Path(dirpath) / name
