"""Latency from crossing the retrain threshold to the retrain run starting, on a real Prefect server.

    python benchmarks/retrain_latency.py [--rounds 5] [--poll 1]

A fresh `prefect server start` on 127.0.0.1 and `reasonloop serve` (tiny model, 1-step retrains);
each round commits enough VeriTime problems to cross the threshold and runs the check in the same
process right after the commit (as the `synthesize` deployment does), then reads the retrain run's
start time from the API. Baseline, same server and runner: a run created directly through the API
(what `prefect deployment run` does) — so the ratio is the cost of going through an event and an
automation instead. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from reasonloop.flows.local_server import LocalPrefectServer  # noqa: E402
from reasonloop.flows.processes import spawn_cli, stop_process, wait_for  # noqa: E402


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poll", type=float, default=1.0, help="PREFECT_RUNNER_POLL_FREQUENCY (s)")
    parser.add_argument("--threshold", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="retrain-latency-"))
    root = (tmp / "store").resolve()
    server = LocalPrefectServer(tmp / "prefect-home")
    serve = None
    try:
        server.start()
        env = server.env(PYTHONPATH=str(REPO), PREFECT_RUNNER_POLL_FREQUENCY=str(args.poll))
        os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_LOGGING_LEVEL")})
        from reasonloop.flows.retrain import check_retrain
        from reasonloop.storage import ReplayStore
        from reasonloop.tasks.models.tiny import init_tiny_model
        from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate

        model = init_tiny_model(tmp / "model", seed=0)
        store = ReplayStore(root)
        store.write("problems", generate(VeriTimeConfig(n=200, seed=0))[0])
        retrain_config = {"steps": 1, "prompts_per_step": 2, "group_size": 2, "max_completion_length": 8}
        serve = spawn_cli([
            "serve", "--root", str(root), "--base-model", str(model),
            "--threshold", str(args.threshold), "--cron", "0 0 1 1 *", "--watch-seconds", "0",
            "--retrain-config", json.dumps(retrain_config), "--eval-limit", "8",
        ], tmp / "serve.log", env=env, cwd=REPO)  # fmt: skip
        http = httpx.Client(base_url=server.api_url, timeout=30)

        def deployment() -> dict | None:
            r = http.get("/deployments/name/retrain/retrain")
            return r.json() if r.status_code == 200 else None

        def runs(dep_id: str) -> list[dict]:
            return http.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [dep_id]}}}).json()

        def wait(check):  # polled every 0.1 s: the latency is measured by it
            return wait_for("the server", check, timeout=300.0, every=0.1)

        dep = wait(deployment)
        wait(lambda: http.get(f"/automations/related-to/prefect.deployment.{dep['id']}").json())
        check_retrain(str(root), args.threshold)  # a first check trains on the seed data
        wait(lambda: (r := runs(dep["id"])) and all(x["state_type"] == "COMPLETED" for x in r))
        triggered, direct = [], []
        for i in range(args.rounds):
            before = {r["id"] for r in runs(dep["id"])}
            crossed = time.time()
            store.write("problems", generate(VeriTimeConfig(n=args.threshold + 20, seed=100 + i))[0])
            assert check_retrain(str(root), args.threshold)["due"]
            run = wait(lambda seen=before: [r for r in runs(dep["id"]) if r["id"] not in seen and r["start_time"]])[0]
            triggered.append(seconds(run["start_time"]) - crossed)
            wait(lambda: all(r["state_type"] in ("COMPLETED", "FAILED", "CANCELLED") for r in runs(dep["id"])))
            asked = time.time()
            created = http.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": {"run_id": f"d{i}"}})
            run_id = created.json()["id"]
            run = wait(lambda rid=run_id: (r := http.get(f"/flow_runs/{rid}").json())["start_time"] and r)
            direct.append(seconds(run["start_time"]) - asked)
            wait(lambda rid=run_id: http.get(f"/flow_runs/{rid}").json()["state_type"] in ("COMPLETED", "FAILED"))
            print(f"round {i}: threshold crossed -> run started {triggered[-1]:.2f} s; direct {direct[-1]:.2f} s")
        t, d = statistics.median(triggered), statistics.median(direct)
        print(f"median over {args.rounds}: event-triggered {t:.2f} s (min {min(triggered):.2f}, max {max(triggered):.2f}); "
              f"direct API run {d:.2f} s; ratio {t / d:.2f}x (runner poll {args.poll} s)")  # fmt: skip
    finally:
        if serve is not None:
            stop_process(serve)  # the runner before the server
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
