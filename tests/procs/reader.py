"""A reader process: queries the store in a loop until STOP_FILE exists.

Prints one line per query: "ok <rows> <distinct ids> <min group size> <max group size> <files>
<manifest version>", or "error <message>" — the test parses them.

    python -m tests.procs.reader ROOT STOP_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

from reasonloop.storage.reader import StoreReader

QUERY = """
SELECT count(*) AS n, count(DISTINCT id) AS d,
       coalesce(min(c), 0) AS lo, coalesce(max(c), 0) AS hi
FROM (SELECT id, count(*) OVER (PARTITION BY group_id) AS c FROM rollouts)
"""


def main() -> None:
    root, stop = Path(sys.argv[1]), Path(sys.argv[2])
    reader = StoreReader(root, threads=1)
    while not stop.exists():
        try:
            reader.refresh(["rollouts"])
            snap = reader.snapshots["rollouts"]
            n, d, lo, hi = reader.query(QUERY).to_pylist()[0].values()
            print(f"ok {n} {d} {lo} {hi} {len(snap.files)} {snap.manifest_version}", flush=True)
        except Exception as exc:  # the test asserts there are none
            print(f"error {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)


if __name__ == "__main__":
    main()
