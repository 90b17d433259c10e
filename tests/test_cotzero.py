"""CoTZero: scenes and their graphs, questions checked against an independent reading of the graph,
negatives that flip, hierarchical chains, the CCVR reward, and text mode on both model kinds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reasonloop.tasks.recipes.cotzero import (
    CoTZeroConfig,
    answer_of,
    flat_target,
    generate,
    gold_steps,
    hier_target,
    perturb,
    phrase,
)
from reasonloop.tasks.recipes.cotzero_scene import COLOURS, Scene, centre_colour, sample_scene
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.tasks.rewards.ccvr import ccvr, edit_score, format_score, levenshtein, semantic_score
from reasonloop.trainers.cotzero_eval import f1_of, score_cotzero


def independent_truth(scene_json: dict, question: str) -> bool:
    """The answer to a question's English text, from the scene's serialized objects, by code that
    shares nothing with the recipe: the definitions in tasks/recipes/cotzero_scene.py re-read."""
    objs = {}
    for text in scene_json["objects"]:
        size, colour, shape, cell = text.split()
        r, c = map(int, cell.split(","))
        objs[f"{colour} {shape}"] = (size, r, c)

    def rel(a: str, word: str, b: str) -> bool:
        if a not in objs or b not in objs:
            return False
        (sa, ra, ca), (sb, rb, cb) = objs[a], objs[b]
        return {
            "left of": ca < cb,
            "above": ra < rb,
            "inside": (ra, ca) == (rb, cb) and sa == "small" and sb == "large",
            "touching": abs(ra - rb) + abs(ca - cb) == 1 and sa == sb == "large",
        }[word]

    def fact(subject: str, predicate: str) -> bool:
        if predicate in ("small", "large"):
            return subject in objs and objs[subject][0] == predicate
        for word in ("left of", "above", "inside", "touching"):
            if predicate.startswith(word + " the "):
                return rel(subject, word, predicate[len(word) + 5 :])
        raise AssertionError(predicate)

    q = question.removesuffix("?")
    if q.startswith("Is there a "):
        return q[len("Is there a ") :] in objs
    if q.startswith("Are there "):
        n, *noun = q[len("Are there ") :].split()
        value = noun[0] if noun[-1] == "shapes" else noun[0].removesuffix("s")
        return sum(1 for k in objs if value in k.split()) == int(n)
    if q.startswith("Is the shape inside the "):
        rest = q[len("Is the shape inside the ") :].split()
        anchor, value = " ".join(rest[:2]), rest[-1]
        inner = [k for k in objs if rel(k, "inside", anchor)]
        return bool(inner) and value in inner[0].split()
    words = q[len("Is the ") :].split()
    subject, predicates = " ".join(words[:2]), " ".join(words[2:]).split(" and ")
    return all(fact(subject, p) for p in predicates)


def test_ten_thousand_questions_match_an_independent_reading_of_their_scene_graphs() -> None:
    data = generate(CoTZeroConfig(scenes=2600, seed=7))
    assert len(data.problems) >= 10_000
    errors = []
    for p in data.problems:
        meta = json.loads(p["metadata"])
        question = p["prompt"].split("\nQ: ")[1].strip()
        truth = independent_truth(meta["scene"], question)
        if ("yes" if truth else "no") != p["answer"] or p["answer"] != p["process_labels"]["F"]:
            errors.append((question, meta["scene"], p["answer"]))
        assert p["process_labels"]["G"] == f"{len(meta['scene']['objects'])} objects"
    assert errors == []
    levels = {json.loads(p["metadata"])["level"] for p in data.problems}
    assert levels == {1, 2, 3}
    answers = [p["answer"] for p in data.problems]
    assert 0.3 < answers.count("yes") / len(answers) < 0.7, "both answers are common"


def test_rendering_is_deterministic_per_seed_and_draws_the_graph() -> None:
    first = generate(CoTZeroConfig(scenes=40, mode="image", seed=3))
    again = generate(CoTZeroConfig(scenes=40, mode="image", seed=3))
    other = generate(CoTZeroConfig(scenes=40, mode="image", seed=4))
    assert first.images == again.images and first.problems == again.problems
    assert set(first.images) != set(other.images)
    for p in first.problems:
        scene = Scene.from_json(json.loads(p["metadata"])["scene"])
        png = first.images[p["media_ref"]]
        for o in scene.objects:  # a large object holding a small one shows the small one's colour
            covered = any(x.cell == o.cell and x.size == "small" for x in scene.objects if x is not o)
            if not covered:
                assert centre_colour(png, o) == COLOURS[o.colour]


def test_negatives_flip_the_answer_with_one_changed_token() -> None:
    data = generate(CoTZeroConfig(scenes=300, negative_rate=1.0, seed=1))
    negatives = [json.loads(p["metadata"]) for p in data.problems if json.loads(p["metadata"])["is_perturbed"]]
    assert len(negatives) > 300
    for meta in negatives:
        scene = Scene.from_json(meta["scene"])
        assert answer_of(scene, meta["query"]) != answer_of(scene, meta["base_query"])
        old, new = meta["perturbed_token"].split("->")
        assert old != new and new in phrase(meta["query"]) and phrase(meta["query"]) != phrase(meta["base_query"])
    scene = sample_scene(random.Random(0))
    rng = random.Random(0)
    q = {"op": "size", "a": [scene.objects[0].colour, scene.objects[0].shape], "value": scene.objects[0].size}
    edited, token = perturb(scene, q, rng)
    assert answer_of(scene, q) and not answer_of(scene, edited) and token.startswith(scene.objects[0].size)


def test_held_out_scenes_are_split_by_composition() -> None:
    data = generate(CoTZeroConfig(scenes=600, mode="both", seed=2))
    by_split: dict[str, set[str]] = {"train": set(), "heldout": set()}
    for p in data.problems:
        by_split[p["split"]].add(json.loads(p["metadata"])["composition"])
    assert by_split["train"] and by_split["heldout"] and not by_split["train"] & by_split["heldout"]
    text = [p for p in data.problems if p.get("media_ref") is None]
    image = [p for p in data.problems if p.get("media_ref")]
    assert len(text) == len(image) and all(p["prompt"].startswith("Scene: ") for p in text)
    assert all(p["prompt"].startswith("Q: ") and "Scene" not in p["prompt"] for p in image)


def test_hierarchical_chain_walks_global_local_relations_answer() -> None:
    scene = Scene.from_json({"grid": 3, "objects": ["large green square 1,1", "small red circle 1,1",
                                                    "large blue triangle 1,2"]})  # fmt: skip
    q = {"op": "ref", "anchor": ["green", "square"], "value": "red"}
    steps = gold_steps(scene, q)
    assert phrase(q) == "Is the shape inside the green square red?"
    assert hier_target(steps) == ("G:3 objects;L:large green square 1,1|small red circle 1,1;"
                                  "R:inside=red circle;#yes")  # fmt: skip
    assert flat_target(steps) == "#yes"
    touch = {"op": "relation", "rel": "touching", "a": ["green", "square"], "b": ["blue", "triangle"]}
    assert answer_of(scene, touch) and gold_steps(scene, touch)["R"] == "touching=yes"
    both = {"op": "and", "a": ["red", "circle"], "parts": [
        {"op": "size", "a": ["red", "circle"], "value": "small"},
        {"op": "relation", "rel": "inside", "a": ["red", "circle"], "b": ["green", "square"]}]}  # fmt: skip
    assert phrase(both) == "Is the red circle small and inside the green square?" and answer_of(scene, both)


GOLD = {"G": "3 objects", "L": "large green square 1,1|small red circle 1,1", "R": "inside=red circle", "F": "yes"}
CHAIN = "G:3 objects;L:large green square 1,1|small red circle 1,1;R:inside=red circle;#yes"


def test_ccvr_on_hand_built_cases() -> None:
    def score(text: str, answer: str = "yes") -> float:
        return ccvr([""], [text], answer=[answer], process_labels=[GOLD])[0]

    assert score(CHAIN) == pytest.approx(1.0)
    assert score(CHAIN.replace("#yes", "#no")) == pytest.approx(0.5)  # everything but the answer
    assert score("#yes") == pytest.approx(0.5)  # a flat answer: the answer only
    assert score("garbage") == 0.0
    swapped = "G:3 objects;L:small red circle 1,1|large green square 1,1;R:inside=red circle;#yes"
    assert semantic_score(swapped, GOLD) == pytest.approx(1.0) and edit_score(swapped, GOLD) == pytest.approx(0.5)
    wrong_attr = "G:3 objects;L:large green square 1,1|large red circle 1,1;R:inside=red circle;#yes"
    assert semantic_score(wrong_attr, GOLD) == pytest.approx((1 + 0.5 + 1) / 3)
    assert edit_score(wrong_attr, GOLD) == pytest.approx(1 - 1 / 4)
    assert format_score(CHAIN) == 1.0 and format_score("G:3;L:x;#yes") == 0.0
    assert levenshtein(list("kitten"), list("sitting")) == 3
    weighted = ccvr([""], [CHAIN.replace("#yes", "#no")], answer=["yes"], process_labels=[GOLD],
                    ccvr_weights={"answer": 2.0})  # fmt: skip
    assert weighted[0] == pytest.approx(0.5)
    assert ccvr([""], [CHAIN], answer=["yes"], process_labels=[None]) == [None], "no steps: no verdict"
    parts = CompositeReward({"ccvr_format": 0.1, "ccvr_answer": 0.5, "ccvr_semantic": 0.2, "ccvr_edit": 0.2})
    assert parts([""], [wrong_attr], answer=["yes"], process_labels=[GOLD]).totals[0] == pytest.approx(
        0.1 + 0.5 + 0.2 * (2.5 / 3) + 0.2 * 0.75
    )


def test_evaluation_metrics_per_level_and_on_the_perturbation_set() -> None:
    data = generate(CoTZeroConfig(scenes=60, negative_rate=1.0, seed=5))
    gold = [hier_target(p["process_labels"]) for p in data.problems]
    perfect = score_cotzero(data.problems, gold)
    assert perfect["accuracy"] == 1.0 and perfect["inconsistency_f1"] == 1.0 and perfect["format"] == 1.0
    assert perfect["semantic"] == pytest.approx(1.0) and set(perfect["by_level"]) == {1, 2, 3}
    assert perfect["steps"] == {"G": 1.0, "L": 1.0, "R": 1.0, "R_exact": 1.0, "answer_follows_R": 1.0}
    flipped = [t.replace("#yes", "#x").replace("#no", "#yes").replace("#x", "#no") for t in gold]
    contrary = score_cotzero(data.problems, flipped)  # right facts, every answer the other one
    assert contrary["accuracy"] == 0.0 and contrary["steps"]["R_exact"] == 1.0
    assert contrary["steps"]["answer_follows_R"] == 0.0
    always_yes = score_cotzero(data.problems, ["#yes"] * len(gold))
    assert always_yes["format"] == 0.0 and always_yes["inconsistency_f1"] == 0.0
    assert always_yes["accuracy"] == pytest.approx(sum(p["answer"] == "yes" for p in data.problems) / len(gold))
    assert f1_of([("no", "no"), ("no", "yes"), ("yes", "no"), (None, "no")]) == pytest.approx(2 / (2 + 1 + 2))


def test_text_mode_trains_both_model_kinds_with_ccvr(base_model: Path, model_kind: str, tmp_path: Path) -> None:
    """SFT on the hierarchical chains, then GRPO steps with CCVR, through the store."""
    from reasonloop.storage import ReplayStore
    from reasonloop.storage.samplers import sft_rows
    from reasonloop.tasks.recipes.chat import as_chat
    from reasonloop.trainers.config import SFTConfig, TrainConfig
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.rl import RLTrainer
    from reasonloop.trainers.sft import run_sft

    data = generate(CoTZeroConfig(scenes=40, seed=0))
    problems, samples = as_chat(data.problems, data.samples) if model_kind == "bpe" else (data.problems, data.samples)
    store = ReplayStore(tmp_path / "store")
    store.write("problems", problems)
    store.write("sft_samples", samples)
    config = SFTConfig(steps=15, batch_size=8, lr=2e-3, seed=0)
    policy = load_policy(base_model, config)
    history = run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=sft_rows(store, "train", "cotzero"),
                      compute_dtype=policy.compute_dtype)  # fmt: skip
    assert history[-1]["loss"] < history[0]["loss"]
    train = TrainConfig(steps=2, prompts_per_step=2, group_size=3, max_completion_length=16, source="cotzero",
                        rewards="ccvr", seed=0, lr=1e-4)  # fmt: skip
    trainer = RLTrainer(train, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id="cz",
                        output_dir=tmp_path / "rl", compute_dtype=policy.compute_dtype)  # fmt: skip
    trainer.train(2)
    rows = store.query("SELECT rewards FROM rollouts WHERE run_id = 'cz'").to_pylist()
    assert len(rows) == 2 * 2 * 3 and all("ccvr" in dict(r["rewards"]) for r in rows)


def test_synthesis_flow_commits_rows_and_images_once(harness: None, tmp_path: Path) -> None:
    from reasonloop.flows.cotzero import cotzero
    from reasonloop.storage import ReplayStore

    config = {"scenes": 30, "mode": "image", "seed": 0}
    store = ReplayStore(tmp_path / "store")
    counts = "SELECT count(*) AS n, count(DISTINCT id) AS ids, count(DISTINCT media_ref) AS m FROM problems"
    first = cotzero(str(tmp_path / "store"), config, chunks=3)
    n = store.query(counts).to_pylist()[0]
    assert first["problems"] == n["n"] == n["ids"] > 0 and first["images"] == n["m"] == 30 and first["rejected"] == 0
    cotzero(str(tmp_path / "store"), config, chunks=2)  # chunked differently: other batches, the same rows
    assert store.query(counts).to_pylist()[0] == n, "a rerun duplicates nothing"
    assert sum(1 for _ in store.media.refs()) == 30
