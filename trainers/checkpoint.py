"""Checkpoints: model (safetensors, loadable by from_pretrained) + optimizer + scheduler + RNG
states + the store watermark, written to a temp folder and renamed into place."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

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


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"checkpoint-{step:06d}"


def save_checkpoint(
    output_dir: Path,
    meta: CheckpointMeta,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> Path:
    final = checkpoint_dir(output_dir, meta.step)
    tmp = output_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save({
        "optimizer": optimizer.state_dict(),
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


def load_states(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    state = torch.load(path / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted(p for p in output_dir.glob("checkpoint-*") if (p / META_FILE).exists())
    return found[-1] if found else None
