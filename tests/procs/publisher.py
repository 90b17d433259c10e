"""Publishes checkpoints whose every weight equals the version, as fast as it can, until
STOP_FILE exists (the reader has seen enough) or VERSIONS were published, then exits.

python -m tests.procs.publisher ROOT MODEL_DIR VERSIONS STOP_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonloop.storage import ReplayStore
from reasonloop.trainers.checkpoint import CheckpointMeta, save_checkpoint


def main() -> None:
    root, model_dir, versions, stop = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    store = ReplayStore(root)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    out = Path(root) / "published"
    for version in range(1, versions + 1):
        if stop.exists():
            break
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(version))
        path = save_checkpoint(out, CheckpointMeta("pub", version, {}, {}), model, tokenizer, optimizer, scheduler)
        store.write("checkpoints", [{"step": version, "path": str(path)}], run_id="pub", sync=False)
        print(version, flush=True)


if __name__ == "__main__":
    main()
