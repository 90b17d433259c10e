"""Data-parallel overhead: `reasonloop train` in 1 process vs 2 torchrun processes (gloo, CPU) at the
same global batch, in one run, interleaved (1, 2, 1, 2, ...) so drift on a shared machine hits both.

    python benchmarks/ddp_bench.py [--steps 12] [--rounds 2] [--prompts 16] [--group 8] [--fsdp]

Reports steps per minute from the trainer's own step times (train_metrics `step_time`, the slowest
rank's; the first step is warm-up and left out; process start-up excluded), the ratio 2-proc/1-proc,
and where a 2-process step's time goes: generation, update, the gradient all-reduce, store reads and
writes (per rank: every rank commits and reads back its own files). On a 2-core machine expect no
gain: the two ranks share the cores one process already used; the point is the overhead.
With `--fsdp` each round also runs 2 processes with `--fsdp` (FSDP2: weights gathered for sampling,
per-layer all-gathers and reduce-scatters in the update, full state gathered for the checkpoint).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reasonloop.flows.local_server import free_port  # noqa: E402
from reasonloop.flows.processes import spawn_cli, stop_process, torchrun  # noqa: E402
from reasonloop.storage import ReplayStore  # noqa: E402
from reasonloop.tasks.models.tiny import init_tiny_model  # noqa: E402
from reasonloop.tasks.recipes.arith import ArithConfig, generate  # noqa: E402

PHASES = ("time/generate", "time/update", "time/grad_allreduce", "time/store_read", "time/store_write")


def run(
    tmp: Path, name: str, model: Path, procs: int, args: argparse.Namespace, fsdp: bool = False
) -> dict[str, float]:
    store = ReplayStore(tmp / f"store-{name}")
    store.write("problems", generate(ArithConfig(n=2000, max_digits=2, seed=0))[0])
    launcher = torchrun(procs, free_port()) if procs > 1 else ()
    cli = ["train", "--run-id", "bench", "--model", str(model), "--root", str(store.root), "--algo", "grpo",
           "--steps", str(args.steps), "--prompts-per-step", str(args.prompts), "--group-size", str(args.group),
           "--max-completion-length", "24", "--lr", "2e-5", "--dtype", "float32", *(["--fsdp"] if fsdp else [])]  # fmt: skip
    threads = str(max(1, (os.cpu_count() or 1) // procs))  # the same cores in all: split among the ranks
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=threads)
    log = tmp / f"{name}.log"
    proc = spawn_cli(cli, log, env=env, cwd=REPO, launcher=launcher)
    try:
        if proc.wait(timeout=1800) != 0:
            raise RuntimeError(log.read_text()[-3000:])
    finally:
        stop_process(proc)
    rows = store.query("SELECT step, metrics FROM train_metrics ORDER BY step").to_pylist()[1:]  # step 1: warm-up
    metrics = [dict(r["metrics"]) for r in rows]
    out = {"steps_per_min": 60 / statistics.mean(m["step_time"] for m in metrics)}
    for phase in PHASES:
        out[phase] = statistics.mean(m.get(phase, 0.0) for m in metrics)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16, help="global prompts per step")
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--fsdp", action="store_true", help="also 2 processes with --fsdp, each round")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    model = init_tiny_model(tmp / "model", seed=0)
    print(f"global batch {args.prompts} prompts x {args.group} samples, {args.steps} steps, {os.cpu_count()} cores")
    header = f"{'round':>5} {'procs':>5} {'steps/min':>9} " + " ".join(f"{p.split('/')[1]:>14}" for p in PHASES)
    print(header)
    ratios: dict[str, list[float]] = {"2": [], "2 fsdp": []}
    for r in range(args.rounds):
        arms = {"1": run(tmp, f"one-{r}", model, 1, args), "2": run(tmp, f"two-{r}", model, 2, args)}
        if args.fsdp:
            arms["2 fsdp"] = run(tmp, f"fsdp-{r}", model, 2, args, fsdp=True)
        for name, m in arms.items():
            print(f"{r:>5} {name:>6} {m['steps_per_min']:>8.1f} " + " ".join(f"{m[p]:>13.3f}s" for p in PHASES))
            if name != "1":
                ratios[name].append(m["steps_per_min"] / arms["1"]["steps_per_min"])
    for name, values in ratios.items():
        if values:
            print(f"{name}-process / 1-process steps per minute: {' '.join(f'{x:.2f}' for x in values)} "
                  f"(mean {statistics.mean(values):.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
