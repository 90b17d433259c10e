"""TRL's dataset formats, mapped onto reasonloop's tables at ingest, so a dataset prepared for TRL's
SFTTrainer or GRPOTrainer loads unchanged (https://huggingface.co/docs/trl/dataset_formats):

    sft_samples  {"prompt": str, "completion": str}                 -> prompt, target
                 {"prompt": [msgs], "completion": [msgs]}           -> messages (prompt + completion),
                                                                       prompt = last user turn, target = last assistant turn
                 {"messages": [msgs]}  (conversational LM)          -> messages, prompt, target as above
    problems     {"prompt": [msgs], ...}  (conversational prompt)   -> messages, prompt = last user turn
                 {"messages": [msgs], ...} without a prompt         -> the same

Other columns pass through (so `answer`, `answer_type` and the rest still apply); a row already
in reasonloop's shape is left as it is.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def _last(messages: list, role: str) -> str | None:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == role and isinstance(m.get("content"), str):
            return m["content"]
    return None


def _as_messages(value: Any, role: str) -> list:
    return list(value) if isinstance(value, list) else [{"role": role, "content": value}]


def from_trl(table: str, row: Any) -> Any:
    """`row` in reasonloop's shape for `table` if it is in one of TRL's formats, else `row`."""
    if not isinstance(row, dict):
        return row
    if table == "sft_samples" and "target" not in row:
        if "completion" in row:
            prompt, completion = row.get("prompt"), row["completion"]
            out = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
            if isinstance(prompt, list) or isinstance(completion, list):
                messages = _as_messages(prompt, "user") + _as_messages(completion, "assistant")
                out.update(messages=messages, prompt=_last(_as_messages(prompt, "user"), "user"),
                           target=_last(_as_messages(completion, "assistant"), "assistant"))  # fmt: skip
            else:
                out.update(prompt=prompt, target=completion)
            return out
        if isinstance(row.get("messages"), list) and "prompt" not in row:
            messages = row["messages"]
            return {**row, "prompt": _last(messages, "user"), "target": _last(messages, "assistant")}
    if table == "problems":
        if isinstance(row.get("prompt"), list):
            return {**row, "messages": row["prompt"], "prompt": _last(row["prompt"], "user")}
        if isinstance(row.get("messages"), list) and "prompt" not in row:
            return {**row, "prompt": _last(row["messages"], "user")}
    return row


def is_trl_table(table: str, schema: pa.Schema) -> bool:
    """Whether an Arrow table holds one of TRL's formats (validated row by row, mapped)."""
    names = set(schema.names)
    prompt_is_list = "prompt" in names and pa.types.is_list(schema.field("prompt").type)
    if table == "sft_samples":
        return "target" not in names and ("completion" in names or ("messages" in names and "prompt" not in names))
    if table == "problems":
        return prompt_is_list or ("messages" in names and "prompt" not in names)
    return False
