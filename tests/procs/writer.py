"""A writer process: commits batches [start, start+count) of rollouts; prints one line per batch.

python -m tests.procs.writer ROOT WRITER START COUNT ROWS RUN_ID [SLEEP]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reasonloop.storage import ReplayStore, StoreConfig
from reasonloop.storage.writer import WriteOptions
from tests.procs.common import rollout_batch


def main() -> None:
    root, writer, start, count, rows, run_id = sys.argv[1:7]
    pause = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    store = ReplayStore(Path(root), StoreConfig(write=WriteOptions(sync=False)))
    for batch in range(int(start), int(start) + int(count)):
        result = store.write("rollouts", rollout_batch(writer, batch, int(rows), run_id))
        print(f"batch {batch} committed {result.committed} duplicates {result.duplicates}", flush=True)
        if pause:
            time.sleep(pause)


if __name__ == "__main__":
    main()
