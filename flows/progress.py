"""Rich progress bars for long flows, shown only when a command opened one (the tasks run in the
same process; a flow run from a deployment simply has no bar)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

_progress: Progress | None = None


@contextmanager
def progress_bars() -> Iterator[Progress]:
    global _progress
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        _progress = progress
        try:
            yield progress
        finally:
            _progress = None


def bar(description: str, total: int) -> Callable[..., None]:
    """A new bar; returns `advance(completed=None, description=None)` (a no-op without bars)."""
    if _progress is None:
        return lambda *args, **kwargs: None
    task: TaskID = _progress.add_task(description, total=total)

    def advance(completed: int | None = None, text: str | None = None, **_: Any) -> None:
        assert _progress is not None
        if completed is None:
            _progress.advance(task)
        else:
            _progress.update(task, completed=completed)
        if text:
            _progress.update(task, description=text)

    return advance
