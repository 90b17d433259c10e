"""CoTZero (arXiv 2602.08339): hierarchical visual chains of thought from atomic scene primitives.

Bottom-up: a scene graph (tasks/recipes/cotzero_scene.py) gives triples; atomic yes/no questions
are asked of it (level 1: exist, size); relations and counts (level 2); atoms are composed into
multi-hop questions (level 3: a conjunction of two facts about one object, or a reference through
`inside`). Lexical-perturbation negatives change one entity, attribute, relation word or number
so the answer flips. Every question is a structured `query` on the row, answered by `answer_of`
on the graph alone.

Top-down: the target walks global -> local -> relations -> answer, compact enough for a tiny model:

    G:3 objects;L:large red circle 0,1|small blue square 2,2;R:left of=yes;#yes

with the gold steps kept per level in `process_labels` (G, L, R, F) for the CCVR reward
(tasks/rewards/ccvr.py). `mode` "text" serializes the scene graph into the prompt (text models);
"image" renders it (the row's `media_ref`, PNG bytes returned beside the rows for the store);
"both" writes each question in both forms. Held-out scenes are chosen by their composition (which
sized, coloured shapes they hold, not where), so no held-out composition is seen in training.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from reasonloop.schemas.common import config_fingerprint
from reasonloop.schemas.media import media_ref
from reasonloop.tasks.recipes.arith import is_heldout
from reasonloop.tasks.recipes.cotzero_scene import (
    COLOURS,
    RELATIONS,
    SHAPES,
    Scene,
    SceneObject,
    count,
    render,
    sample_scene,
    triples,
)

SOURCE = "cotzero"
MODES = ("text", "image", "both")
KINDS = ("exist", "size", "relation", "count", "and", "ref")
LEVEL = {"exist": 1, "size": 1, "relation": 2, "count": 2, "and": 3, "ref": 3}
Query = dict  # {"op": ..., ...}: JSON-able, answered by `answer_of`


@dataclass(frozen=True)
class CoTZeroConfig:
    scenes: int = 200  # scenes to draw
    questions_per_scene: int = 4  # questions asked of each scene (before negatives)
    negative_rate: float = 0.5  # share of questions that also get a lexical-perturbation negative
    kinds: tuple[str, ...] = KINDS
    grid: int = 3  # board side in cells
    cell_px: int = 16  # rendered cell size: a 3x3 board is 48 px square
    min_objects: int = 2
    max_objects: int = 4
    mode: str = "text"  # text | image | both
    chain: str = "hier"  # SFT target: hier (G/L/R steps, then the answer) | flat (the answer only)
    heldout_percent: int = 20  # share of the composition-hash space held out
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES or self.chain not in ("hier", "flat"):
            raise ValueError(f"mode must be one of {MODES} and chain hier|flat")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown kind(s) {sorted(unknown)}; valid: {', '.join(KINDS)}")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid * self.grid:
            raise ValueError("need 1 <= min_objects <= max_objects <= grid * grid")


def _obj(scene: Scene, ref: list[str]) -> SceneObject | None:
    return scene.find(*ref)


def answer_of(scene: Scene, q: Query) -> bool:
    """The truth of a question, from the scene graph only."""
    op = q["op"]
    if op == "exist":
        return _obj(scene, q["a"]) is not None
    if op == "size":
        a = _obj(scene, q["a"])
        return a is not None and a.size == q["value"]
    if op == "relation":
        a, b = _obj(scene, q["a"]), _obj(scene, q["b"])
        return a is not None and b is not None and RELATIONS[q["rel"]](a, b)
    if op == "count":
        return count(scene, q["value"]) == q["n"]
    if op == "and":
        return all(answer_of(scene, part) for part in q["parts"])
    if op == "ref":
        inner = _inside_of(scene, q["anchor"])
        return inner is not None and q["value"] in (inner.colour, inner.shape)
    raise ValueError(f"unknown query op {op!r}")


def _inside_of(scene: Scene, anchor: list[str]) -> SceneObject | None:
    a = _obj(scene, anchor)
    return next((o for o in scene.objects if a is not None and RELATIONS["inside"](o, a)), None)


def phrase(q: Query) -> str:
    """The question's English form."""
    op = q["op"]
    if op == "exist":
        return f"Is there a {' '.join(q['a'])}?"
    if op == "count":
        noun = f"{q['value']}s" if q["value"] in SHAPES else f"{q['value']} shapes"
        return f"Are there {q['n']} {noun}?"
    if op == "ref":
        article = "a " if q["value"] in SHAPES else ""
        return f"Is the shape inside the {' '.join(q['anchor'])} {article}{q['value']}?"
    return f"Is the {' '.join(q['a'])} {_predicate(q)}?"


def _predicate(q: Query) -> str:
    if q["op"] == "size":
        return q["value"]
    if q["op"] == "relation":
        return f"{q['rel']} the {' '.join(q['b'])}"
    return " and ".join(_predicate(part) for part in q["parts"])  # "and": facts about one object


def _atom(kind: str, scene: Scene, rng: random.Random) -> Query | None:
    objs = scene.objects
    names = [[o.colour, o.shape] for o in objs]
    if kind == "exist":
        return {
            "op": "exist",
            "a": rng.choice(names) if rng.random() < 0.5 else [rng.choice(list(COLOURS)), rng.choice(SHAPES)],
        }
    if kind == "size":
        return {"op": "size", "a": rng.choice(names), "value": rng.choice(["small", "large"])}
    if kind == "relation" and len(objs) >= 2:
        a, b = rng.sample(names, 2)
        true = [r for r, fn in RELATIONS.items() if fn(scene.find(*a), scene.find(*b))]
        rel = rng.choice(true) if true and rng.random() < 0.5 else rng.choice(list(RELATIONS))
        return {"op": "relation", "rel": rel, "a": a, "b": b}
    if kind == "count":
        value = rng.choice([*COLOURS, *SHAPES])
        n = count(scene, value)
        return {"op": "count", "value": value, "n": n if rng.random() < 0.5 else max(0, n + rng.choice([-1, 1]))}
    if kind == "and" and len(objs) >= 2:
        a, b = rng.sample(names, 2)
        size = {"op": "size", "a": a, "value": rng.choice(["small", "large"])}
        return {
            "op": "and",
            "a": a,
            "parts": [size, {"op": "relation", "rel": rng.choice(list(RELATIONS)), "a": a, "b": b}],
        }
    if kind == "ref":
        anchors = [[o.colour, o.shape] for o in objs if _inside_of(scene, [o.colour, o.shape]) is not None]
        if anchors:
            anchor = rng.choice(anchors)
            inner = _inside_of(scene, anchor)
            value = rng.choice([inner.colour, inner.shape, rng.choice(list(COLOURS)), rng.choice(SHAPES)])
            return {"op": "ref", "anchor": anchor, "value": value}
    return None


def perturb(scene: Scene, q: Query, rng: random.Random) -> tuple[Query, str] | None:
    """One lexical change (entity, attribute, relation word or number) that flips the answer, and
    what changed ("old->new"); None when no single change flips it."""
    truth = answer_of(scene, q)
    options = list(_edits(scene, q))
    rng.shuffle(options)
    return next(((edited, token) for edited, token in options if answer_of(scene, edited) != truth), None)


def _edits(scene: Scene, q: Query) -> Iterator[tuple[Query, str]]:
    """Every single-token edit of a question: (edited query, "old->new")."""
    op = q["op"]
    if op == "exist":
        for colour in COLOURS:
            yield {**q, "a": [colour, q["a"][1]]}, f"{q['a'][0]}->{colour}"
        for shape in SHAPES:
            yield {**q, "a": [q["a"][0], shape]}, f"{q['a'][1]}->{shape}"
    elif op == "size":
        other = "small" if q["value"] == "large" else "large"
        yield {**q, "value": other}, f"{q['value']}->{other}"
    elif op == "relation":
        for rel in RELATIONS:
            yield {**q, "rel": rel}, f"{q['rel']}->{rel}"
        for o in scene.objects:
            if [o.colour, o.shape] not in (q["a"], q["b"]):
                yield {**q, "b": [o.colour, o.shape]}, f"{' '.join(q['b'])}->{o.name}"
    elif op == "count":
        for n in (q["n"] - 1, q["n"] + 1):
            if n >= 0:
                yield {**q, "n": n}, f"{q['n']}->{n}"
    elif op == "and":
        for i, part in enumerate(q["parts"]):
            for edited, token in _edits(scene, part):
                yield {**q, "parts": [edited if j == i else p for j, p in enumerate(q["parts"])]}, token
    elif op == "ref":
        for value in [*COLOURS, *SHAPES]:
            yield {**q, "value": value}, f"{q['value']}->{value}"


def _mentioned(q: Query) -> list[list[str]]:
    op = q["op"]
    if op in ("exist", "size"):
        return [q["a"]]
    if op == "relation":
        return [q["a"], q["b"]]
    if op == "and":
        out: list[list[str]] = []
        for m in (m for part in q["parts"] for m in _mentioned(part)):
            out += [m] if m not in out else []
        return out
    if op == "ref":
        return [q["anchor"]]
    return []


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _facts(scene: Scene, q: Query) -> list[str]:
    op = q["op"]
    if op == "exist":
        return [f"exists={_yes_no(answer_of(scene, q))}"]
    if op == "size":
        a = _obj(scene, q["a"])
        return [f"size={a.size if a else 'none'}"]
    if op == "relation":
        return [f"{q['rel']}={_yes_no(answer_of(scene, q))}"]
    if op == "count":
        return [f"{q['value']}={count(scene, q['value'])}"]
    if op == "and":
        return [f for part in q["parts"] for f in _facts(scene, part)]
    inner = _inside_of(scene, q["anchor"])
    return [f"inside={inner.name if inner else 'none'}"]


def gold_steps(scene: Scene, q: Query) -> dict[str, str]:
    """The per-level gold steps: G (global), L (local objects), R (relations/facts), F (answer)."""
    local = []
    for colour, shape in _mentioned(q):
        o = scene.find(colour, shape)
        local.append(o.describe() if o else f"{colour} {shape} none")
    if q["op"] == "count":
        local = [o.describe() for o in scene.objects if q["value"] in (o.colour, o.shape)] or ["none"]
    if q["op"] == "ref":
        inner = _inside_of(scene, q["anchor"])
        local += [inner.describe()] if inner else []
    return {
        "G": f"{len(scene.objects)} objects",
        "L": "|".join(local),
        "R": ",".join(_facts(scene, q)),
        "F": "yes" if answer_of(scene, q) else "no",
    }


def hier_target(steps: dict[str, str]) -> str:
    return f"G:{steps['G']};L:{steps['L']};R:{steps['R']};#{steps['F']}"


def flat_target(steps: dict[str, str]) -> str:
    return f"#{steps['F']}"


@dataclass(frozen=True)
class Item:
    """One question of one scene, before it becomes rows."""

    scene: Scene
    query: Query
    level: int
    perturbed_token: str | None  # set on a lexical-perturbation negative: "old->new"
    base: Query | None = None  # a negative's unperturbed question


def scene_items(scene: Scene, config: CoTZeroConfig, rng: random.Random) -> list[Item]:
    items: list[Item] = []
    for _ in range(config.questions_per_scene):
        kind = rng.choice(config.kinds)
        q = _atom(kind, scene, rng)
        if q is None:
            continue
        items.append(Item(scene, q, LEVEL[kind], None))
        if rng.random() < config.negative_rate and (flipped := perturb(scene, q, rng)) is not None:
            items.append(Item(scene, flipped[0], LEVEL[kind], flipped[1], q))
    return items


def _rows(item: Item, config: CoTZeroConfig, fingerprint: str, png_ref: str | None, mode: str) -> tuple[dict, dict]:
    steps = gold_steps(item.scene, item.query)
    question = phrase(item.query)
    prompt = f"Scene: {item.scene.text()}.\nQ: {question}\n" if mode == "text" else f"Q: {question}\n"
    split = "heldout" if is_heldout(item.scene.composition(), config.heldout_percent) else "train"
    metadata = {
        "scene": item.scene.to_json(), "query": item.query, "level": item.level, "mode": mode,
        "is_perturbed": item.perturbed_token is not None, "perturbed_token": item.perturbed_token,
        "base_query": item.base,
        "composition": item.scene.composition(), "triples": triples(item.scene),
    }  # fmt: skip
    common = {"source": SOURCE, "split": split, "producer": "recipe:cotzero", "config_hash": fingerprint}
    media = {"media_ref": png_ref} if mode == "image" else {}
    problem = {
        **common, **media, "prompt": prompt, "answer": steps["F"], "answer_type": "exact",
        "taxonomy": item.query["op"], "difficulty": float(item.level), "process_labels": steps,
        "metadata": json.dumps(metadata, sort_keys=True),
    }  # fmt: skip
    target = hier_target(steps) if config.chain == "hier" else flat_target(steps)
    return problem, {**common, **media, "prompt": prompt, "target": target}


@dataclass
class CoTZeroData:
    problems: list[dict]
    samples: list[dict]
    images: dict[str, bytes]  # media_ref -> PNG bytes, for the store's media (image mode)

    def problem_rows(self) -> list[dict]:
        """The problems as the store takes them: an image question carries its image bytes (the
        store puts them into its media and checks them; storage/media.py)."""
        return [{**p, "image": self.images[p["media_ref"]]} if p.get("media_ref") else p for p in self.problems]


def generate(config: CoTZeroConfig, start: int = 0, stop: int | None = None) -> CoTZeroData:
    """Rows for scenes start..stop-1 (default: all `config.scenes`), scene i drawn from its own RNG
    (seed, i): any split of the range into chunks gives the same rows (duplicates across chunks
    are one row in the store, by id)."""
    fingerprint = config_fingerprint(config)
    modes = ("text", "image") if config.mode == "both" else (config.mode,)
    data = CoTZeroData([], [], {})
    seen: set[tuple[str, str | None]] = set()
    for i in range(start, config.scenes if stop is None else min(stop, config.scenes)):
        rng = random.Random(f"{config.seed}/{i}")
        scene = sample_scene(rng, grid=config.grid, min_objects=config.min_objects, max_objects=config.max_objects)
        ref = None
        if "image" in modes:
            png = render(scene, cell_px=config.cell_px)
            ref = media_ref(png)
            data.images[ref] = png
        for item in scene_items(scene, config, rng):
            for mode in modes:
                problem, sample = _rows(item, config, fingerprint, ref, mode)
                key = (problem["prompt"], problem.get("media_ref"))
                if key not in seen:  # one scene can repeat a question: one row
                    seen.add(key)
                    data.problems.append(problem)
                    data.samples.append(sample)
    return data
