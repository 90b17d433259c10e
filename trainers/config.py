"""Trainer configs: frozen dataclasses whose every field carries help text (the CLI is built
from them, and their fingerprint is stored on every row they produce)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


ALGOS = ("grpo", "dr_grpo", "dapo", "gspo", "igrpo")


@dataclass(frozen=True)
class TrainConfig:
    algo: str = opt("grpo", "grpo | dr_grpo | dapo | gspo | igrpo. Picks the loss, advantage and their defaults.")
    loss: str = opt("", "Override the policy loss (grpo, dr_grpo, dapo, gspo); igrpo wraps this loss (default grpo).")
    advantage: str = opt("", "Override the advantage estimator (grpo: group-normalized, dr_grpo: mean-centered).")
    steps: int = opt(100, "Total optimizer-step count of the run (with --resume: continue up to it).")
    prompts_per_step: int = opt(8, "Prompts sampled per step; each gets a group of completions.")
    group_size: int = opt(8, "Completions per prompt (G). For igrpo: drafts + refinements, matched budget.")
    num_iterations: int = opt(1, "Updates per generation (μ). >1 reuses the batch; ratios then leave 1 and clip.")
    mini_batches: int = opt(1, "Mini-batches per iteration: an optimizer step each.")
    grad_accum: int = opt(1, "Micro-batches accumulated per mini-batch (memory, not math).")
    lr: float = opt(5e-5, "AdamW learning rate. 3e-4 collapses the tiny model; 5e-5 learns.")
    lr_schedule: str = opt("constant", "constant | linear | cosine decay after warm-up.")
    warmup_steps: int = opt(0, "Linear warm-up length in optimizer steps (DAPO uses 20).")
    weight_decay: float = opt(0.0, "AdamW weight decay (0: tests can tell learning from decay).")
    max_grad_norm: float = opt(1.0, "Gradient-norm clip; 0 disables.")
    max_prompt_length: int = opt(256, "Prompts longer than this (tokens) are skipped, counted in metrics.")
    max_completion_length: int = opt(32, "Generation cap (tokens); also Dr. GRPO's L_max.")
    temperature: float = opt(1.0, "Sampling temperature; logprobs are recorded at this temperature.")
    top_p: float = opt(1.0, "Nucleus sampling (1 = off). Recorded logprobs stay untruncated.")
    top_k: int = opt(0, "Top-k sampling (0 = off).")
    ignore_eos: bool = opt(False, "Always generate max_completion_length tokens (fixed-length benchmarks).")
    beta: float = opt(0.0, "k3 KL weight to the initial policy; 0 loads no reference model.")
    clip_low: float = opt(-1.0, "Lower clip ε; negative = the loss's default (dapo 0.2, gspo 3e-4).")
    clip_high: float = opt(-1.0, "Upper clip ε; negative = the loss's default (dapo 0.28, gspo 4e-4).")
    dual_clip: float = opt(0.0, "Dual-clip bound c for negative advantages (verl uses 3); 0 = off.")
    scale_adv_by_batch_std: bool = opt(False, "Divide centered rewards by the batch std instead of the group's.")
    dynamic_sampling: bool = opt(False, "DAPO dynamic sampling: drop zero-variance groups, refill (on for dapo).")
    max_refill_rounds: int = opt(3, "Cap on extra generation rounds per step for dynamic sampling.")
    replay_groups: int = opt(0, "Also train on this many earlier groups per step (replay), IS-corrected.")
    max_staleness: int = opt(1, "Replayed/async rows need policy_version >= current - k (k = this; 0 = on-policy).")
    async_rollouts: bool = opt(False, "Consume rollouts committed by `reasonloop rollout-worker` processes.")
    publish_every: int = opt(
        1, "Async: publish weights only (safetensors + config) every M steps for the rollout workers."
    )
    max_uses: int = opt(1, "Async: a rollout group trains at most R times (R > 1: replay, usage tracked).")
    is_cap: float = opt(2.0, "Async: cap of the importance weight π_old/π_sampler per token (TRL's vLLM correction).")
    wait_timeout_s: float = opt(300.0, "Async: fail when no eligible rollouts arrive for this long.")
    rewards: str = opt("exact", "Reward functions with weights, e.g. 'exact:1,format:0.1'.")
    source: str = opt("", "Train on problems of this source only (default: all).")
    split: str = opt("train", "Problems split to train on.")
    curriculum: str = opt(
        "", "JSON file with an ordered list of problem ids (e.g. from the difficulty scheduler): each step takes "
        "the next prompts in that order, cycling; empty = sample the split uniformly."
    )  # fmt: skip
    igrpo_drafts: int = opt(0, "iGRPO drafts per prompt N (0 = group_size / 2); refinements = group_size - N.")
    igrpo_select: str = opt("best", "iGRPO draft selection: best | worst | random (ties: the step's RNG).")
    igrpo_template: str = opt("{question}{draft}\n{question}", "iGRPO refinement prompt; {question}, {draft}.")
    igrpo_train_drafts: bool = opt(False, "iGRPO: also train on the drafts (group advantages), not only refinements.")
    seed: int = opt(0, "Seed; every step's RNG derives from (seed, step, stage). Resume keeps the original.")
    save_every: int = opt(
        0, "Also write a full checkpoint (a resume point) every N steps; one is always written at the end."
    )
    save_total_limit: int = opt(
        0, "Keep only the newest K full checkpoints (older folders deleted, marked in the registry); 0 keeps all."
    )
    compact_files: int = opt(64, "Compact the run's rollouts once its partition has this many files.")
    report_to: str = opt("none", "none | tensorboard (writes <checkpoint dir>/tb).")
    torch_threads: int = opt(0, "torch CPU threads (0 = torch's default).")
    device: str = opt("auto", "Where the policy trains and samples: auto (cuda if available), cpu, cuda, cuda:N.")

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; valid algos: {', '.join(ALGOS)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (advantages compare samples within a group)")
        if self.algo == "igrpo" and not 1 <= self.drafts < self.group_size:
            raise ValueError("igrpo needs 1 <= igrpo_drafts < group_size")
        if self.igrpo_select not in ("best", "worst", "random"):
            raise ValueError("igrpo_select must be best, worst or random")
        if self.async_rollouts and self.max_staleness < self.publish_every - 1:
            raise ValueError(
                f"async: max_staleness {self.max_staleness} < publish_every - 1 = {self.publish_every - 1}: the trainer "
                "would wait for a policy version the workers never get"
            )
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError("lr_schedule must be constant, linear or cosine")

    @property
    def loss_name(self) -> str:
        return self.loss or ("grpo" if self.algo == "igrpo" else self.algo)

    @property
    def advantage_name(self) -> str:
        return self.advantage or ("dr_grpo" if self.loss_name == "dr_grpo" else "grpo")

    @property
    def uses_dynamic_sampling(self) -> bool:
        return self.dynamic_sampling or self.algo == "dapo"

    @property
    def drafts(self) -> int:
        return self.igrpo_drafts or self.group_size // 2

    def reward_weights(self) -> dict[str, float]:
        out = {}
        for part in filter(None, (p.strip() for p in self.rewards.split(","))):
            name, _, weight = part.partition(":")
            out[name] = float(weight) if weight else 1.0
        return out


@dataclass(frozen=True)
class SFTConfig:
    steps: int = opt(300, "Optimizer steps.")
    batch_size: int = opt(32, "Samples per step.")
    lr: float = opt(1e-3, "AdamW learning rate (a tiny model from scratch wants ~1e-3).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    warmup_steps: int = opt(10, "Linear warm-up steps, then cosine decay to 10%.")
    max_grad_norm: float = opt(1.0, "Gradient-norm clip; 0 disables.")
    source: str = opt("", "Train on sft_samples of this source only (default: all).")
    split: str = opt("train", "sft_samples split to train on.")
    seed: int = opt(0, "Seed for batch order and init-independent randomness.")
    torch_threads: int = opt(0, "torch CPU threads (0 = torch's default).")
    device: str = opt("auto", "Where the policy trains and samples: auto (cuda if available), cpu, cuda, cuda:N.")


def config_help(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) per field, for building a CLI."""
    return [(f.name, f.default if f.default is not MISSING else None, f.metadata.get("help", "")) for f in fields(cls)]
