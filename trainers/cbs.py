"""Contextual Rollout Bandits (CBS, 2602.08499; SPECS §8): which rollouts a step trains on, chosen
by a small network trained online on what training on them did.

Arms are rollouts. Each step the candidates are this step's fresh groups plus the run's earlier
rollouts within `max_staleness` steps (advantage ≠ 0: they can still teach). Each gets 10 context
features, computed by SQL over the store (`FEATURE_SQL`): reward, advantage, mean token entropy,
clip ratio of the step that last trained it, length (÷ max_completion_length), truncated, age in
steps (÷ max_staleness), times trained, its group's mean reward, mean token logprob.

    score(x) = f(x) + γ·sqrt(φ(x)ᵀ A⁻¹ φ(x))     f: MLP 10 -> H -> 1, φ: its hidden layer;
                                                 A = I + Σ φφᵀ over selected arms (Neural-LinUCB)
    select     the top `cbs_keep` of each fresh group (0: all of it), plus the `cbs_replay_rows`
               best-scored stale rollouts; staleness is a feature, so no extra correction
    reward     every arm selected at step t shares R_t = ΔV − w_e·1[E_t > e_min]·ΔE, with V the mean
               reward and E the mean entropy of the fresh rollouts, Δ from step t to t+1 (known one
               step later); f is regressed on (x, R_t) with a few Adam steps

The trainer's usual truncated importance weight still applies to every row (trainers/update.py):
a stale row's ratio is capped, not removed — SPECS reads "no IS correction", which here would
mean trusting arbitrarily off-policy tokens; the cap is the conservative reading.
Every candidate's features, prediction, bonus and selection go to the `schedule` table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import torch

if TYPE_CHECKING:
    from reasonloop.storage.reader import StoreReader
    from reasonloop.trainers.rl import RLTrainer

FEATURES = ("reward", "advantage", "entropy", "clip_ratio", "length", "truncated", "age", "uses", "group_reward",
            "mean_logprob")  # fmt: skip

FEATURE_SQL = """
WITH r AS (
    SELECT id, group_id, policy_version, coalesce(reward, 0) AS reward, advantage, coalesce(entropy, 0) AS entropy,
           len(completion_ids) AS length, finish_reason = 'length' AS truncated,
           coalesce(list_avg(logprobs), 0) AS mean_logprob
    FROM ({rollouts})
), g AS (SELECT group_id, avg(reward) AS group_reward FROM r GROUP BY group_id),
u AS (SELECT rollout_id, count(*) AS uses, max(step) AS last_step FROM ({consumed}) GROUP BY rollout_id),
m AS (
    SELECT step, coalesce(metrics['clip_ratio_low'], 0) + coalesce(metrics['clip_ratio_high'], 0) AS clip_ratio
    FROM ({train_metrics})
)
SELECT r.id, r.group_id, r.policy_version, r.reward, r.advantage, r.entropy, coalesce(m.clip_ratio, 0) AS clip_ratio,
       r.length, r.truncated, $high - r.policy_version AS age, coalesce(u.uses, 0) AS uses, g.group_reward,
       r.mean_logprob
FROM r JOIN g USING (group_id) LEFT JOIN u ON u.rollout_id = r.id LEFT JOIN m ON m.step = u.last_step
ORDER BY r.policy_version, r.group_id, r.id
"""
CANDIDATES = ("stage = 'single' AND policy_version BETWEEN $low AND $high AND advantage IS NOT NULL "
              "AND (policy_version = $high OR advantage <> 0)")  # fmt: skip


def run_scans(reader: StoreReader, run_id: str, low: int, high: int) -> dict[str, str]:
    """Scans of the run's own partition of each table the features read (rollouts: only the files
    whose policy_version range meets [low, high]), so the query costs the window, not the store."""
    from reasonloop.storage.samplers import run_partition

    part = run_partition(run_id)
    return {
        "rollouts": reader.scan("rollouts", where=CANDIDATES, partition=part, bounds={"policy_version": (low, high)}),
        "consumed": reader.scan("consumed", where="status = 'trained'", partition=part),
        "train_metrics": reader.scan("train_metrics", partition=part),
    }


def candidate_features(
    reader: StoreReader, run_id: str, step: int, staleness: int, max_length: int, scans: dict[str, str] | None = None
) -> tuple[pa.Table, torch.Tensor]:
    """(candidates: id, group_id, policy_version; features (C, 10), scaled as the docstring says).
    `step`: the policy version of this step's fresh rollouts; `scans`: run_scans' result, when the
    caller reads the same snapshot again."""
    low = max(0, step - staleness)
    scans = scans or run_scans(reader, run_id, low, step)
    rows = reader.query(FEATURE_SQL.format(**scans), {"low": low, "high": step})
    columns = {k: rows.column(k).to_pylist() for k in FEATURES}
    columns["length"] = [n / max(1, max_length) for n in columns["length"]]
    columns["truncated"] = [float(t) for t in columns["truncated"]]
    columns["age"] = [a / max(1, staleness) for a in columns["age"]]
    x = torch.tensor([[float(columns[k][i]) for k in FEATURES] for i in range(rows.num_rows)], dtype=torch.float32)
    return rows.select(["id", "group_id", "policy_version"]), x.reshape(-1, len(FEATURES))


def delayed_reward(before: tuple[float, float], after: tuple[float, float], weight: float, e_min: float) -> float:
    """R = ΔV − w_e·1[E_before > e_min]·ΔE from (V, E) at two consecutive steps."""
    (v0, e0), (v1, e1) = before, after
    return (v1 - v0) - weight * float(e0 > e_min) * (e1 - e0)


@dataclass
class Pending:
    features: torch.Tensor  # (K, 10) of the arms a step selected
    value: float  # V and E of that step's fresh rollouts
    entropy: float


@dataclass
class CBSScheduler:
    hidden: int = 32
    lr: float = 1e-3
    explore: float = 1.0  # γ
    entropy_weight: float = 1.0  # w_e
    entropy_min: float = 0.0  # e_min
    fit_steps: int = 8
    seed: int = 0
    pending: Pending | None = None
    history: list[float] = field(default_factory=list)  # R per update

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), self.hidden), torch.nn.Tanh())
        self.head = torch.nn.Linear(self.hidden, 1)
        for p in [*self.body.parameters(), *self.head.parameters()]:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        self.optimizer = torch.optim.Adam([*self.body.parameters(), *self.head.parameters()], lr=self.lr)
        self.a_inv = torch.eye(self.hidden)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted gain, exploration bonus), each (C,)."""
        with torch.no_grad():
            phi = self.body(x)
            bonus = self.explore * ((phi @ self.a_inv) * phi).sum(-1).clamp(min=0).sqrt()
            return self.head(phi).squeeze(-1), bonus

    def observe(self, value: float, entropy: float) -> float | None:
        """The fresh rollouts' (V, E) of a new step: trains f on the previous step's arms with the
        delayed reward they share; returns that reward (None at the first step)."""
        if self.pending is None:
            return None
        p = self.pending
        reward = delayed_reward((p.value, p.entropy), (value, entropy), self.entropy_weight, self.entropy_min)
        target = torch.full((p.features.shape[0],), reward)
        for _ in range(self.fit_steps):
            self.optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(self.head(self.body(p.features)).squeeze(-1), target)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():  # Sherman-Morrison, one selected arm at a time
            for phi in self.body(p.features):
                a_phi = self.a_inv @ phi
                self.a_inv -= torch.outer(a_phi, a_phi) / (1 + phi @ a_phi)
        self.history.append(reward)
        self.pending = None
        return reward

    def select(self, candidates: pa.Table, x: torch.Tensor, fresh_version: int, keep: int, replay_rows: int,
               ) -> tuple[list[bool], torch.Tensor, torch.Tensor]:  # fmt: skip
        """Which candidates train: the top `keep` by score within each fresh group (0: every fresh
        row), plus the `replay_rows` best stale ones. Returns (selected, predicted, bonus)."""
        predicted, bonus = self.score(x)
        total = (predicted + bonus).tolist()
        versions = candidates.column("policy_version").to_pylist()
        groups = candidates.column("group_id").to_pylist()
        selected = [False] * len(total)
        by_group: dict[str, list[int]] = {}
        for i, (v, g) in enumerate(zip(versions, groups, strict=True)):
            if v == fresh_version:
                by_group.setdefault(g, []).append(i)
        for members in by_group.values():
            ranked = sorted(members, key=lambda i: (-total[i], i))
            for i in ranked[: keep or len(ranked)]:
                selected[i] = True
        stale = sorted((i for i, v in enumerate(versions) if v != fresh_version), key=lambda i: (-total[i], i))
        for i in stale[:replay_rows]:
            selected[i] = True
        return selected, predicted, bonus

    def remember(self, x: torch.Tensor, selected: list[bool], value: float, entropy: float) -> None:
        rows = [i for i, s in enumerate(selected) if s]
        self.pending = Pending(x[rows], value, entropy)


def fresh_value_entropy(fresh: pa.Table) -> tuple[float, float]:
    """V and E of a step's fresh rollouts: mean reward and mean token entropy (0 where unknown)."""

    def mean(name: str) -> float:
        value = pc.mean(fresh.column(name)).as_py() if fresh.num_rows else None
        return 0.0 if value is None or math.isnan(value) else float(value)

    return mean("reward"), mean("entropy")


def schedule_rows(step: int, candidates: pa.Table, x: torch.Tensor, predicted: torch.Tensor, bonus: torch.Tensor,
                  selected: list[bool], fresh_version: int) -> pa.Table:  # fmt: skip
    versions = candidates.column("policy_version").to_pylist()
    return pa.table({
        "step": pa.array([step] * candidates.num_rows, pa.int64()),
        "rollout_id": candidates.column("id"), "group_id": candidates.column("group_id"),
        "policy_version": candidates.column("policy_version"),
        "fresh": pa.array([v == fresh_version for v in versions]),
        "features": pa.array(x.tolist(), pa.list_(pa.float64())),
        "predicted": pa.array(predicted.tolist(), pa.float64()), "bonus": pa.array(bonus.tolist(), pa.float64()),
        "selected": pa.array(selected),
    })  # fmt: skip


def scheduled_batch(trainer: RLTrainer, fresh: pa.Table, step: int, metrics: dict[str, float]) -> pa.Table:
    """A step's batch under CBS: the scheduler learns from the last step's choice, scores this
    step's rollouts (`fresh`, policy_version `step`) and stale ones, and picks the batch; every
    candidate's features and score go to the `schedule` table, fresh rows left out to `consumed`."""
    c = trainer.config
    if trainer.dist.active:
        raise NotImplementedError("--scheduler cbs runs in one process (its stale picks are not sharded)")
    if trainer.cbs is None:
        trainer.cbs = CBSScheduler(lr=c.cbs_lr, explore=c.cbs_explore, entropy_weight=c.cbs_entropy_weight,
                                   entropy_min=c.cbs_entropy_min, seed=c.seed)  # fmt: skip
    value, entropy = fresh_value_entropy(fresh)
    reward = trainer.cbs.observe(value, entropy)
    if reward is not None:
        metrics["cbs/reward"] = reward
    low = max(0, step - c.max_staleness)
    with trainer.timed("store_read"):  # one snapshot for the features and the stale rows they pick
        scans = run_scans(trainer.reader, trainer.run_id, low, step)
        candidates, x = candidate_features(trainer.reader, trainer.run_id, step, c.max_staleness,
                                           c.max_completion_length, scans)  # fmt: skip
    # Fresh candidates are the rows this step kept (dynamic sampling may have dropped groups).
    mine = pc.or_(pc.not_equal(candidates.column("policy_version"), step),
                  pc.is_in(candidates.column("id"), value_set=fresh.column("id"))).to_pylist()  # fmt: skip
    candidates, x = candidates.filter(pa.array(mine)), x[torch.tensor(mine, dtype=torch.bool)]
    selected, predicted, bonus = trainer.cbs.select(candidates, x, step, c.cbs_keep, c.cbs_replay_rows)
    trainer.cbs.remember(x, selected, value, entropy)
    ids, versions = candidates.column("id").to_pylist(), candidates.column("policy_version").to_pylist()
    chosen = [i for i, s in zip(ids, selected, strict=True) if s]
    stale = [i for i, s, v in zip(ids, selected, versions, strict=True) if s and v != step]
    kept = pc.is_in(fresh.column("id"), value_set=pa.array(chosen, pa.string()))
    with trainer.timed("store_read"):
        old = trainer.reader.query(f"SELECT * FROM ({scans['rollouts']}) WHERE list_contains($ids, id) ORDER BY id",
                                   {"ids": stale, "low": low, "high": step})  # fmt: skip
    batch = pa.concat_tables([fresh.filter(kept), old.select(fresh.column_names).cast(fresh.schema)])
    trainer.untrained.append((fresh.filter(pc.invert(kept)), "unselected"))
    with trainer.timed("store_write"):
        trainer.store.write("schedule", schedule_rows(step, candidates, x, predicted, bonus, selected, step),
                            run_id=trainer.run_id, producer=trainer.producer, sync=False)  # fmt: skip
    stale_versions = old.column("policy_version").to_pylist()
    metrics.update({
        "cbs/candidates": float(candidates.num_rows), "cbs/selected_fresh": float(len(chosen) - len(stale)),
        "cbs/selected_stale": float(len(stale)), "cbs/predicted_mean": float(predicted.mean()) if len(ids) else 0.0,
        "replay/rows": float(len(stale)),
        "replay/staleness_mean": step - sum(stale_versions) / len(stale_versions) if stale_versions else 0.0,
    })  # fmt: skip
    trainer._count_uses(batch)
    return batch
