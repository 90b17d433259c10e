"""Deployments on a real `prefect server start` (127.0.0.1, fresh home): data-triggered retraining
end to end, a burst of events, the trainer's own rows, and `prefect deploy --all` vs `serve`.

Every process is started in its own process group and stopped by PID in `finally` blocks:
serve runners before the server (a serve process hangs on shutdown once the server is gone).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from reasonloop.flows.local_server import LocalPrefectServer, prefect_executable
from reasonloop.flows.processes import spawn_cli, stop_process, wait_for
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = 200
NAMES = {  # deployment -> flow
    "synthesize": "synthesize-and-check", "watch": "check-retrain", "retrain": "retrain",
    "evaluate-and-promote": "evaluate-and-promote",
}  # fmt: skip


class Api:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)

    def deployment(self, name: str) -> dict | None:
        r = self.http.get(f"/deployments/name/{NAMES[name]}/{name}")
        return r.json() if r.status_code == 200 else None

    def runs(self, name: str) -> list[dict]:
        dep = self.deployment(name)
        body = {"deployments": {"id": {"any_": [dep["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.http.post("/flow_runs/filter", json=body).json()

    def automations(self, deployment_id: str) -> list[dict]:
        return self.http.get(f"/automations/related-to/prefect.deployment.{deployment_id}").json()

    def describe(self) -> dict[str, Any]:
        """What must agree between `serve` and `prefect deploy`: names, schedules, triggers, limits."""
        out = {}
        for name in NAMES:
            dep = self.deployment(name)
            schedules = sorted(
                json.dumps({k: v for k, v in s["schedule"].items() if k in ("cron", "interval")}, sort_keys=True)
                for s in dep["schedules"]
            )
            triggers = sorted(
                json.dumps(
                    {
                        "expect": sorted(a["trigger"]["expect"]),
                        "match": a["trigger"]["match"],
                        "posture": a["trigger"]["posture"],
                        "threshold": a["trigger"]["threshold"],
                        "parameters": [x.get("parameters") for x in a["actions"]],
                        "name": a["name"],
                    },
                    sort_keys=True,
                )
                for a in self.automations(dep["id"])
            )
            limit = dep.get("global_concurrency_limit") or {}
            options = dep.get("concurrency_options") or {}
            out[name] = {
                "entrypoint": dep["entrypoint"], "schedules": schedules, "triggers": triggers, "limit": limit.get("limit"),
                "collision": options.get("collision_strategy", "ENQUEUE") if limit else None,
            }  # fmt: skip
        return out


def terminal(runs: list[dict]) -> bool:
    return all(r["state_type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") for r in runs)


def add_problems(store: ReplayStore, n: int, seed: int) -> None:
    problems, _ = generate(VeriTimeConfig(n=n, seed=seed))
    store.write("problems", problems)


def reasonloop(env: dict, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "reasonloop.flows.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextmanager
def server_and_serve(
    tmp_path: Path, root: Path, model: Path, *serve_args: str
) -> Iterator[tuple[dict, Api, subprocess.Popen]]:
    """A fresh `prefect server start` and `reasonloop serve` for `root` against it; both stopped by
    PID on the way out, the runner before the server."""
    server = LocalPrefectServer(tmp_path / "prefect-home")
    serve: subprocess.Popen | None = None
    try:
        server.start()
        env = server.env(REASONLOOP_HOME=str(root), REASONLOOP_BASE_MODEL=str(model), PYTHONPATH=str(REPO))
        serve = spawn_cli(["serve", "--root", str(root), "--base-model", str(model), *serve_args],
                          tmp_path / "serve.log", env=env, cwd=REPO)  # fmt: skip
        yield env, Api(server.api_url), serve
    finally:
        if serve is not None:
            stop_process(serve)
        server.stop()


def test_threshold_event_retrains_evaluates_and_promotes(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = (tmp_path / "store").resolve()
    store = ReplayStore(root)
    # Held-out and training VeriTime problems below the threshold (no retrain due yet).
    add_problems(store, 150, seed=1)
    assert store.rows_since("problems", 0)[0] < THRESHOLD
    retrain_config = {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_completion_length": 16}
    serve_args = ("--threshold", str(THRESHOLD), "--cron", "0 0 1 1 *", "--watch-seconds", "0",
                  "--retrain-config", json.dumps(retrain_config), "--eval-limit", "16")  # fmt: skip
    with server_and_serve(tmp_path, root, tiny_model_dir, *serve_args) as (env, api, _):
        # No watch deployment here: its first interval run could check (and emit) at any moment.
        serving = [n for n in NAMES if n != "watch"]
        wait_for("3 deployments", lambda: all(api.deployment(n) for n in serving), timeout=120)
        assert api.deployment("watch") is None
        retrain_id = api.deployment("retrain")["id"]
        wait_for("retrain trigger", lambda: api.automations(retrain_id), timeout=60)

        # Below the threshold: the check emits nothing.
        assert reasonloop(env, "check-retrain", "--root", str(root), "--threshold", str(THRESHOLD))["due"] is False
        # Cross it: one event, one retrain run, a checkpoint, an evaluate-and-promote decision.
        add_problems(store, 150, seed=2)
        crossed = time.time()
        check = reasonloop(env, "check-retrain", "--root", str(root), "--threshold", str(THRESHOLD))
        assert check["due"] is True and check["total"] >= THRESHOLD
        runs = wait_for("the retrain run to finish", lambda: (r := api.runs("retrain")) and terminal(r) and r)
        assert [r["state_type"] for r in runs] == ["COMPLETED"], runs
        assert runs[0]["parameters"]["run_id"] == check["run_id"]
        latency = _seconds(runs[0]["start_time"]) - crossed
        print(f"threshold crossed -> retrain run started: {latency:.1f} s (incl. the check-retrain process)")
        promote = wait_for(
            "evaluate-and-promote", lambda: (r := api.runs("evaluate-and-promote")) and terminal(r) and r
        )
        assert [r["state_type"] for r in promote] == ["COMPLETED"]
        checkpoints = store.query("SELECT run_id, watermark FROM checkpoints").to_pylist()
        assert [c["run_id"] for c in checkpoints] == [check["run_id"]]
        assert json.loads(checkpoints[0]["watermark"])["data"] == {"problems": store.commit_position("problems")}
        decisions = store.query("SELECT decision, candidate_path, report FROM promotions").to_pylist()
        assert len(decisions) == 1 and decisions[0]["decision"] in ("promoted", "rejected")
        assert Path(decisions[0]["report"]).read_text().count("Decision:") == 1

        # The trainer's own rollouts are in the store, and they do not make a retrain due.
        assert store.query("SELECT count(*) AS n FROM rollouts").column("n")[0].as_py() > 0
        assert reasonloop(env, "check-retrain", "--root", str(root), "--threshold", str(THRESHOLD))["due"] is False
        time.sleep(3)
        assert len(api.runs("retrain")) == 1

        # A burst of events for one crossing starts one run; the rest are cancelled.
        add_problems(store, 300, seed=3)
        burst = (
            "from reasonloop.flows.retrain import emit_store_event, check_retrain\n"
            "from prefect import flow\n"
            "@flow\n"
            "def burst(root: str) -> None:\n"
            "    for _ in range(5):\n"
            "        emit_store_event('reasonloop.retrain.due', root, {'run_id': 'retrain-burst', 'new_rows': 300})\n"
            f"burst({str(root)!r})\n"
        )
        subprocess.run([sys.executable, "-c", burst], env=env, cwd=REPO, check=True, timeout=120)
        runs = wait_for(
            "5 burst runs to settle",
            lambda: len(r := [x for x in api.runs("retrain") if x["parameters"]["run_id"] == "retrain-burst"]) == 5
            and terminal(r) and r,
        )  # fmt: skip
        # Duplicates arriving while the first run holds the slot are cancelled by the trigger's
        # concurrency limit; one arriving after it finished completes without training (retrain is
        # idempotent per run_id). Either way: one checkpoint, one evaluation.
        states = sorted(r["state_type"] for r in runs)
        assert set(states) <= {"CANCELLED", "COMPLETED"} and "COMPLETED" in states, states
        wait_for("the burst's evaluation", lambda: len(store.query("SELECT id FROM promotions")) == 2)
        trained = store.query("SELECT path FROM checkpoints WHERE run_id = 'retrain-burst'")
        assert trained.num_rows == 1
        time.sleep(3)
        assert len(store.query("SELECT id FROM promotions")) == 2


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_prefect_yaml_declares_what_serve_registers(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = (tmp_path / "store").resolve()
    ReplayStore(root)
    with server_and_serve(tmp_path, root, tiny_model_dir) as (env, api, serve):
        wait_for("deployments", lambda: all(api.deployment(n) for n in NAMES), timeout=120)
        # Both triggered deployments: serve registers their automations one after the other, and a
        # snapshot taken between the two differed from prefect.yaml's (a CI run hit that).
        triggered = ("retrain", "evaluate-and-promote")
        wait_for("triggers", lambda: all(api.automations(api.deployment(n)["id"]) for n in triggered))
        served = api.describe()
        stop_process(serve)  # deploy from prefect.yaml replaces what serve registered
        subprocess.run([prefect_executable(), "work-pool", "create", "reasonloop", "--type", "process"],
                       env=env, cwd=REPO, check=True, capture_output=True, timeout=120)  # fmt: skip
        out = subprocess.run([prefect_executable(), "--no-prompt", "deploy", "--all"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        deployed = api.describe()
        assert deployed == served
        assert json.loads(served["retrain"]["triggers"][0])["match"] == {
            "prefect.resource.id": f"reasonloop.store.{root}"
        }
        assert served["retrain"]["collision"] == "CANCEL_NEW" and served["retrain"]["limit"] == 1
        assert served["evaluate-and-promote"]["limit"] == 1 and len(served["evaluate-and-promote"]["triggers"]) == 1
        assert served["synthesize"]["schedules"] == ['{"cron": "0 * * * *"}']
        assert served["retrain"]["entrypoint"] == "reasonloop.flows.retrain.retrain"
        assert served["watch"]["schedules"] == ['{"interval": 300.0}']
        assert api.deployment("retrain")["work_pool_name"] == "reasonloop"
