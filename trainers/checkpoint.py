"""Checkpoints, written to a temp folder and renamed into place (a reader never sees half of one):

<out>/checkpoint-<step>/   full: model (safetensors, loadable by from_pretrained), tokenizer,
                           optimizer + scheduler + RNG states, the trainer's meta (config,
                           watermark, bookkeeping) — a resume point
<out>/weights-<step>/      weights only: model, tokenizer and the meta, no optimizer state —
                           what rollout workers and evaluation load (a fraction of the bytes)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reasonloop.trainers.policy import save_weights

STATE_FILE = "trainer_state.pt"
META_FILE = "trainer_state.json"


@dataclass
class CheckpointMeta:
    run_id: str
    step: int  # optimizer steps completed
    config: dict[str, Any]  # the run's TrainConfig (the seed comes from here on resume)
    watermark: dict[str, Any]  # which rows trained it: run, last policy_version, rollout file names
    parent: str | None = None  # previous checkpoint folder name
    state: dict[str, Any] = field(default_factory=dict)  # trainer bookkeeping (async: rollout usage counts)


FULL_PREFIX, WEIGHTS_PREFIX = "checkpoint-", "weights-"


def checkpoint_dir(output_dir: Path, step: int, prefix: str = FULL_PREFIX) -> Path:
    return output_dir / f"{prefix}{step:06d}"


def save_checkpoint(
    output_dir: Path,
    meta: CheckpointMeta,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    state_dict: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """A full checkpoint, or with `optimizer=None` a weights-only one (`weights-<step>`).
    `state_dict`, `optimizer_state`: the whole states when the live ones are sharded (FSDP)."""
    final = checkpoint_dir(output_dir, meta.step, FULL_PREFIX if optimizer is not None else WEIGHTS_PREFIX)
    tmp = output_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    # LoRA: a resume point keeps the adapter; workers get merged weights
    save_weights(model, tmp, merged=optimizer is None, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if optimizer is not None:
        torch.save({
            "optimizer": optimizer_state if optimizer_state is not None else optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }, tmp / STATE_FILE)  # fmt: skip
    (tmp / META_FILE).write_text(json.dumps(asdict(meta), indent=1))
    if final.exists():  # a rerun of the same step: move the old one aside first, so `final` is
        trash = output_dir / f".old-{final.name}-{uuid.uuid4().hex[:8]}"  # never a half-deleted folder
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def load_meta(path: Path) -> CheckpointMeta:
    return CheckpointMeta(**json.loads((path / META_FILE).read_text()))


def load_states(
    path: Path, optimizer: torch.optim.Optimizer, scheduler: Any,
    load_optimizer: Callable[[dict[str, Any]], None] | None = None,
) -> None:  # fmt: skip
    """`load_optimizer`: how the saved optimizer state goes in (FSDP: sharded); default `load_state_dict`."""
    state = torch.load(path / STATE_FILE, weights_only=False)
    (load_optimizer or optimizer.load_state_dict)(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest full checkpoint (a resume point) in `output_dir`."""
    found = sorted(p for p in output_dir.glob(f"{FULL_PREFIX}*") if (p / META_FILE).exists())
    return found[-1] if found else None


def prune(output_dir: Path, prefix: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` folders of `prefix`; returns what was deleted. A folder is
    first renamed aside, so no reader ever opens a half-deleted one by its real name."""
    found = sorted(p for p in output_dir.glob(f"{prefix}*") if p.is_dir() and (p / META_FILE).exists())
    deleted = []
    for path in found[: max(0, len(found) - keep)]:
        trash = output_dir / f".old-{path.name}-{uuid.uuid4().hex[:8]}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(path)
    return deleted
