"""`reasonloop demo`: the main job, one command on a fresh machine, offline.

tiny model -> VeriTime problems -> SFT warm-up -> RL -> evaluation -> report.

The RL algorithm is `dapo` (GRPO advantages, token-mean loss, clip-higher, dynamic sampling), not
iGRPO and not plain GRPO, from measurements (benchmarks/RESULTS.md): iGRPO trains on refinement
prompts and loses single-shot accuracy (inference here is single-shot); plain GRPO's gains on the
demo stayed within the evaluation's noise (+1.2 to +2.4 points), while dynamic sampling, which
spends the update only on groups whose rewards differ, gave the largest gain. RL runs on the
difficulty scheduler's curriculum (learnable problems for the SFT model, in taxonomy order): without
it the gain at the 5-minute budget stayed within the evaluation's noise (+1.0 ± 1.0, paired), with
it +1.5 ± 1.1 and +1.2 ± 1.1 on two seeds (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import flow

from reasonloop.flows.artifacts import training_summary
from reasonloop.flows.pipelines import build_model_task, evaluate_task, schedule_task, sft_task, synthesize, train_task
from reasonloop.flows.progress import bar
from reasonloop.flows.report import write_report
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.evaluate import paired_gain


@dataclass(frozen=True)
class DemoSettings:
    problems: int  # VeriTime problems drawn (10% held out by prompt hash)
    sft_steps: int
    rl_steps: int
    eval_limit: int  # held-out problems evaluated (the same ones at every stage)
    max_new_tokens: int = 48
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 5e-5
    temperature: float = 0.7
    algo: str = "grpo"
    schedule_pool: int = 0  # training problems annotated by the difficulty scheduler (0: RL samples uniformly)
    schedule_k: int = 4  # samples per problem to estimate its pass rate


FULL = DemoSettings(
    problems=12000, sft_steps=400, rl_steps=190, eval_limit=1024, lr=2e-5, algo="dapo", schedule_pool=768
)
QUICK = DemoSettings(
    problems=400, sft_steps=10, rl_steps=2, eval_limit=32, prompts_per_step=2, group_size=2, schedule_pool=16
)


@flow(name="demo")
def demo(root: str, quick: bool = False, seed: int = 0, tokenizer: str = "char") -> dict[str, Any]:
    """Synthesize -> store -> SFT -> RL -> evaluate -> report. Returns paths and accuracies.
    `tokenizer="bpe"`: the Qwen2-shaped model (tasks/models/bpe.py) on VeriTime as conversations,
    through its chat template."""
    settings = QUICK if quick else FULL
    start = time.perf_counter()
    store = ReplayStore(root)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = store.root / "demo" / stamp
    stages = bar("demo stages", 7)
    seconds: dict[str, float] = {}  # wall time per stage, for the report

    def lap(name: str) -> None:
        seconds[name] = round(time.perf_counter() - start - sum(seconds.values()), 1)

    base = build_model_task(str(work / "base"), "tiny", seed, tokenizer)
    lap("model")
    stages(1, "demo: data")
    vt = VeriTimeConfig(n=settings.problems, seed=seed, chat=tokenizer == "bpe")
    synthesize(str(store.root), asdict(vt))
    lap("synthesis")
    stages(2, "demo: evaluate base")

    def evaluate(model: str) -> dict:
        return evaluate_task(
            str(store.root), model, "heldout", "veritime", settings.eval_limit, settings.max_new_tokens
        )

    evals = {"base": evaluate(base)}
    lap("evaluate base")
    stages(3, "demo: SFT")
    sft_config = SFTConfig(steps=settings.sft_steps, batch_size=32, lr=1e-3, source="veritime", seed=seed)
    sft_run = f"demo-sft-{stamp}"
    sft_model = sft_task(str(store.root), base, str(work / "sft"), asdict(sft_config), sft_run)
    lap("SFT")
    evals["sft"] = evaluate(sft_model)
    lap("evaluate SFT")
    curriculum = ""
    if settings.schedule_pool:
        stages(4, "demo: difficulty schedule")
        curriculum = str(work / "curriculum.json")
        info_schedule = schedule_task(
            str(store.root), sft_model, "veritime", settings.schedule_pool, settings.schedule_k,
            settings.max_new_tokens, curriculum,
        )  # fmt: skip
        if not info_schedule["scheduled"]:  # nothing learnable (e.g. --quick's few SFT steps): sample uniformly
            curriculum = ""
        lap("schedule")
    stages(5, "demo: RL")
    rl_run = f"demo-rl-{stamp}"
    train_config = TrainConfig(
        algo=settings.algo, steps=settings.rl_steps, prompts_per_step=settings.prompts_per_step, group_size=settings.group_size,
        lr=settings.lr, temperature=settings.temperature, max_completion_length=settings.max_new_tokens,
        rewards="veritime", source="veritime", seed=seed, curriculum=curriculum,
    )  # fmt: skip
    checkpoint = train_task(str(store.root), sft_model, rl_run, asdict(train_config))
    stages(6, "demo: evaluate RL")
    lap("RL")
    evals["rl"] = evaluate(checkpoint)
    lap("evaluate RL")
    info = {
        "algo": settings.algo, "wall_s": time.perf_counter() - start, "problems": settings.problems,
        "sft_steps": settings.sft_steps, "rl_steps": settings.rl_steps, "rl_lr": settings.lr,
        "rl_temperature": settings.temperature, "group": f"{settings.prompts_per_step} prompts x {settings.group_size}",
        "reward": "veritime = format + answer + process + length", "checkpoint": checkpoint,
        "seconds per stage": seconds,
        "difficulty schedule": info_schedule if settings.schedule_pool else "off",
    }  # fmt: skip
    report = write_report(work / "report", store, rl_run=rl_run, sft_run=sft_run, evals=evals, info=info)
    gain = paired_gain(evals["rl"], evals["sft"])
    training_summary(store, rl_run, checkpoint, [
        f"- held-out accuracy: SFT {100 * evals['sft']['accuracy']:.1f}% -> RL {100 * evals['rl']['accuracy']:.1f}% "
        f"({100 * gain.delta:+.1f} ± {100 * gain.stderr:.1f} points, paired SE)", f"- report: `{report}`",
    ])  # fmt: skip
    stages(7, "demo: done")
    return {
        "report": str(report),
        "store": str(store.root),
        "evals": evals,
        "checkpoint": checkpoint,
        "wall_s": info["wall_s"],
    }
