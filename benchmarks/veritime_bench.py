"""VeriTime synthesis throughput: problems generated per second, and with the store write.

    python benchmarks/veritime_bench.py [--n 20000]

Generation alone vs generation + committing problems and sft_samples (validation, Parquet,
atomic publish) in the same run. The demo's wall time and accuracies come from
`reasonloop demo` itself (recorded in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    config = VeriTimeConfig(n=args.n, seed=0)
    start = time.perf_counter()
    problems, samples = generate(config)
    gen_s = time.perf_counter() - start
    store = ReplayStore(Path(tempfile.mkdtemp()) / "store")
    start = time.perf_counter()
    problems2, samples2 = generate(config)
    p, s = store.write("problems", problems2), store.write("sft_samples", samples2)
    total_s = time.perf_counter() - start
    assert p.committed == len(problems) and s.committed == len(samples)
    print(f"{len(problems)} problems (+ {len(samples)} sft_samples)")
    print(f"  generate only:          {gen_s:6.2f} s  {len(problems) / gen_s:9.0f} problems/s")
    print(
        f"  generate + store write: {total_s:6.2f} s  {len(problems) / total_s:9.0f} problems/s  ({gen_s / total_s:.2f}x)"
    )


if __name__ == "__main__":
    main()
