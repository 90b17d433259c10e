"""`rollouts`: sampled completions with everything a trainer needs to reuse them.

id key: hash(run_id, policy_version, problem_id, stage, group_id, sample_idx) — a resumed step
that regenerates the same sample gets the same id. Partitioned by `run_id`; compacted files are
ordered by policy_version (the train step of the weights that sampled the row).

Token-level columns: `prompt_ids` (P,), `completion_ids` (T,), `logprobs` (T,) are the sampling
log-probabilities log_softmax(logits / temperature)[token] — so `logprobs` must have exactly one
value per completion token, each <= 0. `loss_mask_spans` are [start, end) spans of completion
tokens the policy loss leaves out (Octopus: o1 and the separator); `kl_mask_spans` those a per-span
KL term to the reference covers (Octopus stage I: o1). `pair_type`, `source_ids` and
`part_correct` describe a recombined row (trainers/octopus.py): the correctness labels of its o1
and o2, the rollouts its parts came from, and the label "cc" | "cw" | "wc" | "ww".
`completion` is the raw text of `completion_ids` (what training trains on); `final_completion` the
text a user saw after backtrack decoding (tasks/engines/backtrack.py), None when no backtracking
engine sampled the row — `coalesce(final_completion, completion)` is the shown text either way.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import FLOAT_MAP, LOSS_MASK_SPANS, TableSpec

STAGES = frozenset({"single", "draft", "refine", "verify", "self_correct", "recombined"})
FINISH_REASONS = frozenset({"stop", "length"})

ROLLOUTS = TableSpec(
    name="rollouts",
    # 2: usage_count dropped (which steps used a rollout is the `consumed` table); 3: Octopus columns;
    # 4: final_completion (BSAFE+ backtrack decoding)
    version=4,
    fields=(
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),  # samples compared with each other
        pa.field("sample_idx", pa.int32(), nullable=False),  # index within the group
        pa.field("stage", pa.string(), nullable=False),
        pa.field("parent_rollout_id", pa.string()),  # iGRPO refine -> its draft; Octopus pair
        pa.field("policy_version", pa.int64(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("prompt_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("completion_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("entropy", pa.float64()),  # mean per-token entropy; None where unavailable
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("reward", pa.float64()),  # total (weighted) reward; None = not scored (yet)
        pa.field("rewards", FLOAT_MAP),  # per reward function
        pa.field("advantage", pa.float64()),
        pa.field("loss_mask_spans", LOSS_MASK_SPANS),  # completion token spans excluded from loss
        pa.field("kl_mask_spans", LOSS_MASK_SPANS),  # completion token spans of a per-span KL term
        pa.field("pair_type", pa.string()),  # Octopus: cc | cw | wc | ww (o1 then o2 correct?)
        pa.field("source_ids", pa.list_(pa.string())),  # Octopus: the rollouts of o1 and o2
        pa.field("part_correct", pa.list_(pa.bool_())),  # Octopus: o1, o2 correct
        pa.field("final_completion", pa.string()),  # after backtrack decoding; None: `completion` as shown
    ),
    id_key=("run_id", "policy_version", "problem_id", "stage", "group_id", "sample_idx"),
    partition_by="run_id",
    sort_by=("policy_version", "group_id", "sample_idx", "stage", "id"),
    nonempty=("problem_id", "group_id"),
    defaults={"stage": "single"},
    enums={"stage": STAGES, "finish_reason": FINISH_REASONS},
    finite=("reward", "rewards", "advantage", "logprobs", "entropy"),
    range_columns=("policy_version",),
    nonnegative=("sample_idx", "policy_version", "prompt_ids", "completion_ids"),
    equal_lengths=(("completion_ids", "logprobs"),),
    texts=("prompt", "completion", "final_completion"),
)
