"""Exact and near-duplicate removal, and decontamination against evaluation items.

Prompts are normalized (whitespace) and shingled into character 5-grams; MinHash signatures (64
hash functions, numpy) banded for LSH (16 bands of 4) propose candidate pairs, and a pair is a
near duplicate only when the shingle sets' exact Jaccard is at least `threshold` and the two
prompts hold the same numbers in the same order — LSH only decides what is compared, and on short
templated items ("v0=3m/s ... t=4s" vs "t=5s") a changed number is a different problem however
similar the text. Duplicates form clusters (union-find); in each, the first row (input order) is kept
when every other member's answer is equivalent to it (the checker of its answer type decides), and
the whole cluster is dropped as conflicting otherwise: two references that disagree on one question
cannot both be right, and picking one would guess.

Decontamination drops a training row whose prompt is an exact or near duplicate of any evaluation
prompt (the held-out split, or any rows passed as `eval_rows`).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from reasonloop.tasks.rewards.answers import NUMBER, normalize_answer
from reasonloop.tasks.rewards.units import parse_quantity, same_quantity

Dropped = tuple[dict, str]
SHINGLE = 5
PERMUTATIONS, BANDS = 64, 16
_SEEDS = np.random.default_rng(0).integers(0, 2**63, PERMUTATIONS, dtype=np.uint64)[:, None]  # fixed across runs


def normalize(text: str) -> str:
    """Whitespace collapsed; case kept (genotypes, units and formulas are case-sensitive: Aa vs aa,
    mA vs MA, Co vs CO)."""
    return " ".join(text.split())


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def shingles(text: str, k: int = SHINGLE) -> set[int]:
    text = normalize(text)
    grams = {text[i : i + k] for i in range(max(1, len(text) - k + 1))}
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams}


def signature(items: set[int]) -> np.ndarray:
    """(PERMUTATIONS,) uint64 MinHash of a shingle set: per hash function j, the minimum over the
    items of splitmix64(x XOR seed_j) (uint64 arithmetic wraps, as the mixer intends)."""
    z = np.fromiter(items, dtype=np.uint64, count=len(items))[None, :] ^ _SEEDS  # (P, n)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))).min(axis=1)


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(1, len(a | b))


def candidate_pairs(signatures: Sequence[np.ndarray]) -> set[tuple[int, int]]:
    rows = PERMUTATIONS // BANDS
    pairs: set[tuple[int, int]] = set()
    for band in range(BANDS):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, sig in enumerate(signatures):
            buckets[sig[band * rows : (band + 1) * rows].tobytes()].append(i)
        for members in buckets.values():
            pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1 :])
    return pairs


def equivalent(a: dict, b: dict) -> bool:
    """Do two rows' reference answers agree (by the checker of their answer type)?"""
    kind = a.get("answer_type") or "exact"
    if kind != (b.get("answer_type") or "exact"):
        return False
    x, y = str(a["answer"]), str(b["answer"])
    if kind == "quantity":
        qx, qy = parse_quantity(x), parse_quantity(y)
        return qx is not None and qy is not None and same_quantity(qx, qy)
    if kind == "numeric":
        try:
            return math.isclose(float(x.replace(",", "")), float(y.replace(",", "")), rel_tol=1e-6)
        except ValueError:
            return False
    if kind == "choice":  # keys name options: compare what they name

        def named(row: dict, key: str) -> str:
            options = row.get("choices") or []
            k = ord(key.strip().upper()[:1] or "?") - ord("A")
            return normalize_answer(options[k]) if 0 <= k < len(options) else key.upper()

        return named(a, x) == named(b, y)
    return normalize_answer(x) == normalize_answer(y)


def _clusters(n: int, pairs: set[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(b)] = find(a)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [sorted(g) for g in groups.values()]


def near_pairs(texts: Sequence[str], threshold: float) -> set[tuple[int, int]]:
    """Index pairs whose prompts are exact (normalized) or near duplicates (Jaccard >= threshold)."""
    sets, nums = [shingles(t) for t in texts], [numbers(t) for t in texts]
    pairs = {(a, b) for a, b in candidate_pairs([signature(s) for s in sets])
             if nums[a] == nums[b] and jaccard(sets[a], sets[b]) >= threshold}  # fmt: skip
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = normalize(t)
        if key in first:
            pairs.add((first[key], i))
        else:
            first[key] = i
    return pairs


def _name(row: dict) -> str:
    """How a reason names a row: its id, or its prompt when it has none yet."""
    return str(row.get("id") or row["prompt"])


def deduplicate(rows: Sequence[dict], threshold: float = 0.85) -> tuple[list[dict], list[Dropped]]:
    clusters = _clusters(len(rows), near_pairs([r["prompt"] for r in rows], threshold))
    kept, dropped = [], []
    for members in clusters:
        head = rows[members[0]]
        if all(equivalent(head, rows[m]) for m in members[1:]):
            kept.append(members[0])
            dropped += [(rows[m], f"dedup: duplicate of {_name(head)!r}") for m in members[1:]]
        else:
            ids = ", ".join(_name(rows[m]) for m in members)
            dropped += [(rows[m], f"dedup: conflicting duplicates (answers disagree): {ids}") for m in members]
    return [rows[i] for i in sorted(kept)], dropped


def decontaminate(
    rows: Sequence[dict], eval_rows: Sequence[dict], threshold: float = 0.85
) -> tuple[list[dict], list[Dropped]]:
    """Training rows minus those whose prompt (near-)duplicates an evaluation prompt."""
    if not eval_rows:
        return list(rows), []
    texts = [r["prompt"] for r in eval_rows] + [r["prompt"] for r in rows]
    n_eval = len(eval_rows)
    hit: dict[int, int] = {}
    for a, b in near_pairs(texts, threshold):
        if (a < n_eval) != (b < n_eval):
            e, t = (a, b) if a < n_eval else (b, a)
            hit.setdefault(t - n_eval, e)
    kept = [r for i, r in enumerate(rows) if i not in hit]
    dropped = [
        (rows[i], f"decontaminate: overlaps evaluation item {_name(eval_rows[e])!r}") for i, e in sorted(hit.items())
    ]
    return kept, dropped
