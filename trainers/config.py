"""Trainer configs: frozen dataclasses whose every field carries help text (the CLI is built
from them, and their fingerprint is stored on every row they produce)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from reasonloop.tasks.recipes.igrpo_refine import template_text


def opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


ALGOS = ("grpo", "dr_grpo", "dapo", "gspo", "igrpo", "octopus")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelOptions:
    """How the policy is loaded and run: what a TRL user sets for a real checkpoint."""

    dtype: str = opt("auto", "Compute dtype: auto (the checkpoint's torch_dtype) | float32 | bfloat16 | float16.")
    param_dtype: str = opt(
        "float32", "float32: fp32 master weights and optimizer state, compute under autocast (AdamW never updates "
        "bf16 parameters); compute: parameters in the compute dtype (half the memory, lossy updates; ask for it)."
    )  # fmt: skip
    chat_template: str = opt("auto", "auto: problems with `messages` go through the tokenizer's chat template | none | "
                                     "always (plain prompts too, as one user turn).")  # fmt: skip
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward (memory for time, as TRL).")
    lora_r: int = opt(
        0, "LoRA rank (peft); 0 trains every weight. Engines get merged weights; checkpoints store the adapter."
    )
    lora_alpha: int = opt(0, "LoRA alpha (0 = 2 x rank).")
    lora_dropout: float = opt(0.0, "LoRA dropout.")
    lora_target_modules: str = opt("all-linear", "Comma-separated module names for LoRA, or all-linear.")
    torch_threads: int = opt(0, "torch CPU threads (0 = torch's default).")
    device: str = opt("auto", "Where the policy trains and samples: auto (cuda if available), cpu, cuda, cuda:N.")

    def check_model_options(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        if self.param_dtype not in ("float32", "compute"):
            raise ValueError("param_dtype must be float32 or compute")
        if self.chat_template not in ("auto", "none", "always"):
            raise ValueError("chat_template must be auto, none or always")
        if self.lora_r < 0:
            raise ValueError("lora_r must be >= 0")


@dataclass(frozen=True)
class TrainConfig(ModelOptions):
    algo: str = opt(
        "grpo", "grpo | dr_grpo | dapo | gspo | igrpo | octopus. Picks the loss, advantage and their defaults."
    )
    loss: str = opt("", "Override the policy loss (grpo, dr_grpo, dapo, gspo); igrpo wraps this loss (default grpo).")
    advantage: str = opt("", "Override the advantage estimator (grpo: group-normalized, dr_grpo: mean-centered).")
    steps: int = opt(100, "Total optimizer-step count of the run (with --resume: continue up to it).")
    prompts_per_step: int = opt(8, "Prompts sampled per step; each gets a group of completions.")
    group_size: int = opt(8, "Completions per prompt (G). For igrpo: drafts + refinements, matched budget.")
    num_iterations: int = opt(1, "Updates per generation (μ). >1 reuses the batch; ratios then leave 1 and clip.")
    mini_batches: int = opt(1, "Mini-batches per iteration: an optimizer step each.")
    grad_accum: int = opt(1, "Micro-batches per mini-batch: memory, not math (losses are normalized by the "
                             "mini-batch's token and sequence counts, so the gradient is the same).")  # fmt: skip
    forward_batch_size: int = opt(
        0, "Rows per no-grad forward (π_old recompute, reference model); 0 = the micro-batch size."
    )
    fsdp: bool = opt(False, "Under torchrun: shard parameters, gradients and optimizer state over the ranks with "
                            "FSDP2 (fully_shard) instead of replicating them (trainers/sharding.py).")  # fmt: skip
    lr: float = opt(
        1e-6, "AdamW learning rate (TRL's default, for real models; the tiny demo models want 2e-5 to 5e-5)."
    )
    lr_schedule: str = opt("constant", "constant | linear | cosine decay after warm-up.")
    warmup_steps: int = opt(0, "Linear warm-up length in optimizer steps (DAPO uses 20).")
    weight_decay: float = opt(0.0, "AdamW weight decay (0: tests can tell learning from decay).")
    max_grad_norm: float = opt(1.0, "Gradient-norm clip; 0 disables.")
    max_prompt_length: int = opt(
        512, "Longer prompts (tokens, template included) are cut or skipped (prompt_truncation)."
    )
    prompt_truncation: str = opt(
        "left", "left: keep the prompt's last max_prompt_length tokens (as TRL) | skip the problem."
    )
    max_completion_length: int = opt(256, "Generation cap (tokens); also Dr. GRPO's L_max.")
    stop: str = opt("", "Stop strings: one string, or a JSON list of them; every EOS id of the model stops too.")
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
    scheduler: str = opt("uniform", "Which rollouts a step trains on: uniform (its own groups, plus --replay-groups "
                                    "earlier groups drawn uniformly) | cbs (Contextual Rollout Bandits: a scheduler "
                                    "learned online over its rollouts and stale ones; trainers/cbs.py).")  # fmt: skip
    cbs_keep: int = opt(0, "CBS: rollouts kept per fresh group, best-scored first (0 = all of them).")
    cbs_replay_rows: int = opt(16, "CBS: best-scored stale rollouts (within --max-staleness) added per step.")
    cbs_explore: float = opt(1.0, "CBS: γ, the weight of the exploration bonus.")
    cbs_entropy_weight: float = opt(1.0, "CBS: w_e, the weight of the entropy term in the delayed reward.")
    cbs_entropy_min: float = opt(0.0, "CBS: e_min; the entropy term applies while the entropy is above it.")
    cbs_lr: float = opt(1e-3, "CBS: learning rate of the scheduler's MLP.")
    async_rollouts: bool = opt(False, "Consume rollouts committed by `reasonloop rollout-worker` processes.")
    publish_every: int = opt(
        1, "Async: publish weights only (safetensors + config) every M steps for the rollout workers."
    )
    max_uses: int = opt(1, "Async: a rollout group trains at most R times (R > 1: replay, usage tracked).")
    is_cap: float = opt(2.0, "Cap of the per-token importance weight π_old/π_sampler (TRL's truncated correction of the "
                             "training-inference gap; replayed and async rows are corrected the same way).")  # fmt: skip
    wait_timeout_s: float = opt(300.0, "Async: fail when no eligible rollouts arrive for this long.")
    rewards: str = opt("exact", "Reward functions with weights, e.g. 'exact:1,format:0.1'.")
    source: str = opt("", "Train on problems of this source only (default: all).")
    split: str = opt("train", "Problems split to train on.")
    curriculum: str = opt(
        "", "JSON file with an ordered list of problem ids (e.g. from the difficulty scheduler): each step takes "
        "the next prompts in that order, cycling; empty = sample the split uniformly."
    )  # fmt: skip
    dynamic_curriculum: bool = opt(False, "Dr. SCI's curriculum: train on problems with pass_rate in (pending_max, 1) "
                                          "(or none recorded); one whose running accuracy over this run's stored "
                                          "rollouts exceeds --curriculum-retire-at is replaced by the easiest pending "
                                          "problem (pass_rate <= pending_max).")  # fmt: skip
    curriculum_pending_max: float = opt(0.625, "Dynamic curriculum: pass rates at or below this wait in D_pending.")
    curriculum_retire_at: float = opt(0.9, "Dynamic curriculum: running accuracy above which a problem is retired.")
    curriculum_min_samples: int = opt(8, "Dynamic curriculum: rollouts of a problem before its accuracy counts.")
    curriculum_metric: str = opt("", "Dynamic curriculum: the reward component read as accuracy (default: the "
                                     "first of --rewards).")  # fmt: skip
    judge: str = opt("keyword", "The rubric/unified rewards' judge: keyword (offline, the rubric items' keywords) | "
                                "engine (an LLM judge served at --judge-url, OpenAI-compatible).")  # fmt: skip
    judge_url: str = opt("", "engine judge: the server's base URL.")
    judge_model: str = opt("", "engine judge: the served model's name.")
    verify_every: int = opt(0, "Learning to Self-Verify: one verification step (the policy judges its own recent "
                               "responses, rewarded by label match) after every k generation steps; 0 = off.")  # fmt: skip
    verify_template: str = opt("teacher", "Self-verify prompt: teacher (the paper's grading prompt, \\boxed{Yes/No}) | "
                                          "short (tiny models: question, response, 'verify:' -> #Yes/#No) | a text "
                                          "with {question} and {response}.")  # fmt: skip
    verify_mode: str = opt("full", "Self-verify: show the full response | only its final answer (answer).")
    transfer_receiver: str = opt("", "RLTR (--rewards exact:1,transfer:λ): the frozen receiver, a model folder or hub "
                                     "id sharing the policy's tokenizer ('' = the starting policy's folder).")  # fmt: skip
    transfer_url: str = opt("", "RLTR: an OpenAI-compatible server as the receiver (serving --transfer-receiver).")
    transfer_max_new_tokens: int = opt(0, "RLTR: the receiver's continuation cap (0 = --max-completion-length).")
    transfer_temperature: float = opt(0.0, "RLTR: the receiver's temperature (0 = greedy).")
    igrpo_drafts: int = opt(0, "iGRPO drafts per prompt N (0 = group_size / 2); refinements = group_size - N.")
    igrpo_select: str = opt("best", "iGRPO draft selection: best | worst | random (ties: the step's RNG) | judge "
                                    "(best by the --judge's verdict on the final answer, not the reward).")  # fmt: skip
    igrpo_template: str = opt(
        "repeat", "iGRPO refinement prompt for plain prompts: repeat | review, or a template with {question}, {draft}."
    )
    igrpo_refine_request: str = opt(
        "Check the answer above and give a corrected final answer.",
        "iGRPO with chat prompts: the user turn after the draft (which goes in as an assistant turn).",
    )
    igrpo_train_drafts: bool = opt(False, "iGRPO: also train on the drafts (group advantages), not only refinements.")
    octopus_stage: int = opt(1, "Octopus: 1 trains o2 only (o1 and separator masked, KL on o1); 2 unmasks o1 for "
                                "cc and ww pairs, no KL.")  # fmt: skip
    octopus_masks: bool = opt(True, "Octopus: selective masking by stage; off trains every token of every row "
                                    "(the reward-hacking control: r' pays more for w->c than c->c).")  # fmt: skip
    octopus_selection: str = opt(
        "code", "Octopus: how recombined pairs are chosen: paper | code (the released code's)."
    )
    octopus_group: int = opt(0, "Octopus: size N of the augmented group (0 = 2 x group_size, as the code).")
    octopus_answer: str = opt("hash", "Octopus: where a part's answer is: hash (#<answer>: arith, VeriTime) | boxed.")
    span_kl_coef: float = opt(
        0.01, "KL weight on rows' kl_mask_spans tokens (Octopus stage I's y1_kl_coef); rows without spans get none."
    )
    backtrack: bool = opt(False, "Backtrack decoding on rollouts (BSAFE+): [CATEGORY_c][BACKTRACK_BY_X] deletes the X "
                                 "tokens before it from the text rewards judge; training keeps the raw tokens.")  # fmt: skip
    critic: str = opt("rules", "The `safe` reward's critic: rules (the safety recipe's exact one) | engine (an LLM "
                               "judge served at --critic-url, OpenAI-compatible).")  # fmt: skip
    critic_url: str = opt("", "engine critic: the judge server's base URL.")
    critic_model: str = opt("", "engine critic: the served judge model's name.")
    prefill_fraction: float = opt(0.0, "RLBF: share of prompts with a safety context whose response is forced to start "
                                       "with a violation minus its last 2 characters (the prefill attack), so the safe "
                                       "term varies within groups.")  # fmt: skip
    sft_coef: float = opt(0.0, "RLBF: add α·L_SFT on sft_samples of --sft-source to every optimizer step (0 = off).")
    sft_source: str = opt("bsafe", "RLBF: the sft_samples source of the SFT term.")
    sft_batch_size: int = opt(8, "RLBF: SFT samples per optimizer step.")
    seed: int = opt(0, "Seed; every step's RNG derives from (seed, step, stage). Resume keeps the original.")
    save_every: int = opt(
        0, "Also write a full checkpoint (a resume point) every N steps; one is always written at the end."
    )
    save_total_limit: int = opt(
        0, "Keep only the newest K full checkpoints (older folders deleted, marked in the registry); 0 keeps all."
    )
    compact_files: int = opt(64, "Compact the run's rollouts once its partition has this many files.")
    report_to: str = opt("none", "none | tensorboard (writes <checkpoint dir>/tb).")
    engine: str = opt(
        "transformers", "Rollout engine: transformers (the policy itself) | vllm (colocated in this process, weights "
        "loaded after every update) | openai (a server at --engine-url; prompts tokenized here)."
    )  # fmt: skip
    engine_url: str = opt("", "openai engine: the server's base URL, e.g. http://127.0.0.1:8000.")
    engine_model: str = opt("", "openai engine: the served model name (default: the policy's folder).")
    engine_weight_sync: str = opt(
        "/reasonloop/load_weights", "openai engine: server path that loads a published weights folder (POST "
        "{path, version}) after every update; empty: the server's weights are fixed (a teacher)."
    )  # fmt: skip
    gpu_memory_utilization: float = opt(0.3, "vllm engine: share of GPU memory vLLM takes (TRL's colocate default).")
    tensor_parallel_size: int = opt(1, "vllm engine: tensor-parallel GPUs per engine.")
    enable_sleep_mode: bool = opt(False, "vllm engine: free vLLM's GPU memory (sleep level 2) during each update.")

    def __post_init__(self) -> None:
        self.check_model_options()
        if self.prompt_truncation not in ("left", "skip"):
            raise ValueError("prompt_truncation must be left or skip")
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; valid algos: {', '.join(ALGOS)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (advantages compare samples within a group)")
        if self.algo == "igrpo" and not 1 <= self.drafts < self.group_size:
            raise ValueError("igrpo needs 1 <= igrpo_drafts < group_size")
        if self.igrpo_select not in ("best", "worst", "random", "judge"):
            raise ValueError("igrpo_select must be best, worst, random or judge")
        template_text(self.igrpo_template)
        if self.async_rollouts and self.max_staleness < self.publish_every - 1:
            raise ValueError(
                f"async: max_staleness {self.max_staleness} < publish_every - 1 = {self.publish_every - 1}: the trainer "
                "would wait for a policy version the workers never get"
            )
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError("lr_schedule must be constant, linear or cosine")
        if self.engine not in ("transformers", "vllm", "openai"):
            raise ValueError("engine must be transformers, vllm or openai")
        if self.critic not in ("rules", "engine") or (self.critic == "engine" and not self.critic_url):
            raise ValueError("critic must be rules, or engine with --critic-url")
        if self.judge not in ("keyword", "engine") or (self.judge == "engine" and not self.judge_url):
            raise ValueError("judge must be keyword, or engine with --judge-url")
        if self.scheduler not in ("uniform", "cbs"):
            raise ValueError("scheduler must be uniform or cbs")
        if self.scheduler == "cbs" and (self.replay_groups or self.async_rollouts or self.algo in ("igrpo", "octopus")):
            raise ValueError("--scheduler cbs chooses the replayed rollouts itself: not with --replay-groups, async "
                             "rollouts, igrpo or octopus")  # fmt: skip
        if self.verify_every:
            from reasonloop.tasks.recipes import self_verify

            self_verify.template_text(self.verify_template)
            if self.verify_mode not in self_verify.MODES or self.verify_every < 0 or self.algo in ("igrpo", "octopus"):
                raise ValueError(f"self-verify: verify_mode must be one of {', '.join(self_verify.MODES)}, "
                                 "verify_every >= 0, "
                                 "and the algorithm one with single-stage groups (not igrpo or octopus)")  # fmt: skip
        if self.dynamic_curriculum and self.curriculum:
            raise ValueError("--dynamic-curriculum and --curriculum (a fixed order) exclude each other")
        if self.algo == "octopus":
            if self.octopus_stage not in (1, 2):
                raise ValueError("octopus_stage must be 1 or 2")
            if self.octopus_selection not in ("paper", "code"):
                raise ValueError("octopus_selection must be paper or code")
            if self.octopus_answer not in ("hash", "boxed"):
                raise ValueError("octopus_answer must be hash or boxed")
            if self.augmented_size < self.group_size:
                raise ValueError("octopus_group must be >= group_size")

    @property
    def loss_name(self) -> str:
        return self.loss or {"igrpo": "grpo", "octopus": "gspo"}.get(self.algo, self.algo)

    @property
    def augmented_size(self) -> int:
        return self.octopus_group or 2 * self.group_size

    @property
    def needs_reference(self) -> bool:
        """β > 0, or Octopus stage I's KL on o1 (the only rows with kl_mask_spans)."""
        return self.beta > 0 or (self.algo == "octopus" and self.octopus_stage == 1 and self.span_kl_coef > 0)

    @property
    def advantage_name(self) -> str:
        return self.advantage or ("dr_grpo" if self.loss_name == "dr_grpo" else "grpo")

    @property
    def uses_dynamic_sampling(self) -> bool:
        return self.dynamic_sampling or self.algo == "dapo"

    @property
    def drafts(self) -> int:
        return self.igrpo_drafts or self.group_size // 2

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if not self.stop:
            return ()
        if self.stop.startswith("["):
            import json

            return tuple(str(x) for x in json.loads(self.stop))
        return (self.stop,)

    def reward_weights(self) -> dict[str, float]:
        if self.algo == "octopus" and self.rewards == "exact":  # the default: Octopus's own reward
            return {"self_correction" if self.octopus_answer == "hash" else "self_correction_boxed": 1.0}
        out = {}
        for part in filter(None, (p.strip() for p in self.rewards.split(","))):
            name, _, weight = part.partition(":")
            out[name] = float(weight) if weight else 1.0
        return out


@dataclass(frozen=True)
class OfflineOptions(ModelOptions):
    """What the offline trainers (SFT, DPO) share: the optimizer step, and OGPSA
    (trainers/ogpsa.py), off unless reference sets are named."""

    steps: int = opt(300, "Optimizer steps.")
    lr: float = opt(2e-5, "AdamW learning rate.")
    warmup_steps: int = opt(10, "Linear warm-up steps, then cosine decay to 10%.")
    grad_accum: int = opt(1, "Micro-batches per step (memory, not math: the loss is normalized by the step's size).")
    max_length: int = opt(1024, "Longer samples (prompt + target tokens) are cut from the right, as TRL's max_length.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient-norm clip; 0 disables.")
    split: str = opt("train", "Split of the table to train on.")
    seed: int = opt(0, "Seed for batch order and init-independent randomness.")
    ogpsa_ref_sets: str = opt("", "OGPSA: comma-separated sft_samples sources (capability sets) whose task-loss "
                                  "gradients the update is projected off (empty = off).")  # fmt: skip
    ogpsa_every: int = opt(
        30, "OGPSA: recompute the reference gradients every k optimizer steps (code: 30 SFT, 5 DPO)."
    )
    ogpsa_mode: str = opt("project", "OGPSA: project (remove the components) | threshold (only where they conflict).")
    ogpsa_samples: int = opt(200, "OGPSA: examples per reference set (the code's base_num_samples).")
    ogpsa_scale: float = opt(1.0, "OGPSA threshold mode: the scale of a gradient that does not conflict.")

    def check_offline_options(self) -> None:
        self.check_model_options()
        if self.ogpsa_mode not in ("project", "threshold"):
            raise ValueError("ogpsa_mode must be project or threshold")
        if self.ogpsa_every < 1 or self.ogpsa_samples < 1:
            raise ValueError("ogpsa_every and ogpsa_samples must be >= 1")

    @property
    def ogpsa_sources(self) -> list[str]:
        return [s.strip() for s in self.ogpsa_ref_sets.split(",") if s.strip()]


@dataclass(frozen=True)
class SFTConfig(OfflineOptions):
    batch_size: int = opt(32, "Samples per step.")
    lr: float = opt(2e-5, "AdamW learning rate (TRL's SFT default; a tiny model from scratch wants ~1e-3).")
    source: str = opt("", "Train on sft_samples of this source only (default: all).")

    def __post_init__(self) -> None:
        self.check_offline_options()


@dataclass(frozen=True)
class DPOConfig(OfflineOptions):
    steps: int = opt(100, "Optimizer steps.")
    batch_size: int = opt(16, "Preference pairs per step.")
    lr: float = opt(1e-6, "AdamW learning rate (TRL's DPO default; the tiny demo models want ~1e-5).")
    warmup_steps: int = opt(0, "Linear warm-up steps, then cosine decay to 10%.")
    source: str = opt("", "Train on preferences of this source only (default: all).")
    save_every: int = opt(0, "Also write a resume point every N steps (<out>/checkpoints); 0: only the final model.")
    beta: float = opt(0.1, "DPO β: the strength of the implicit KL to the reference (TRL's default 0.1).")
    loss_type: str = opt("sigmoid", "sigmoid (DPO) | ipo.")

    def __post_init__(self) -> None:
        self.check_offline_options()
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError("loss_type must be sigmoid or ipo")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")


def config_help(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) per field, for building a CLI."""
    return [(f.name, f.default if f.default is not MISSING else None, f.metadata.get("help", "")) for f in fields(cls)]
