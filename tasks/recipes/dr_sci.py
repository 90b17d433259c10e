"""`dr_sci`: procedural science problems for Dr. SCI's pipeline (SPECS §6), offline.

Verifiable items (a rule checker decides) and open-ended items (a rubric decides), in physics
(kinematics, circuits, gas laws), chemistry (molar mass, stoichiometry) and biology (genetics),
each with a compact chain a tiny model can learn:

    phys: v0=3m/s a=2m/s2 t=4s. v=?          v=v0+a*t=3+2*4=11;#11 m/s           quantity
    bio: Bb x bb. share bb? A)1/4 B)1/2 ...   Bb gives b 1/2;bb gives b 1;1/2*1=1/2;#B   choice
    phys: formula for I from V, R?            I=V/R;#V/R                                 math
    phys why: R 3->6ohm, V fixed. I? explain  I=V/R;V fixed;R up so I down;#halves    rubric

An open-ended item's `answer` is its short final answer (the rubric reward caps a wrong one) and
its `rubric` lists 5 atomic items tagged Essential / Important / Optional / Pitfall, with the
keywords the offline judge checks (tasks/rewards/rubric.py). Every gold chain satisfies its
checker; held-out items are chosen by a hash of the prompt, as `arith`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from reasonloop.schemas.common import config_fingerprint
from reasonloop.tasks.recipes.arith import is_heldout
from reasonloop.tasks.rewards.rubric import RubricItem

SOURCE = "dr_sci"
MASS = {"H": 1, "C": 12, "N": 14, "O": 16, "Na": 23, "Mg": 24, "S": 32, "Ca": 40}
FORMULAS = {
    "H2O": (("H", 2), ("O", 1)), "CO2": (("C", 1), ("O", 2)), "NH3": (("N", 1), ("H", 3)),
    "CH4": (("C", 1), ("H", 4)), "O2": (("O", 2),), "N2": (("N", 2),), "CO": (("C", 1), ("O", 1)),
    "NO2": (("N", 1), ("O", 2)), "SO2": (("S", 1), ("O", 2)), "H2S": (("H", 2), ("S", 1)),
    "CaO": (("Ca", 1), ("O", 1)), "MgO": (("Mg", 1), ("O", 1)), "C2H6": (("C", 2), ("H", 6)),
    "NaOH": (("Na", 1), ("O", 1), ("H", 1)), "CaCO3": (("Ca", 1), ("C", 1), ("O", 3)),
}  # fmt: skip
CROSSES = {"AA x aa": (0, 1), "Aa x aa": (1, 2), "Aa x Aa": (1, 4), "AA x Aa": (0, 1)}  # share aa (num, den)
GENES = "ABDEGHRT"  # gene letters (a cross is written with one of them)


@dataclass(frozen=True)
class DrSciConfig:
    n: int = 2000  # items to draw (duplicates dropped, so a few less may come back)
    open_fraction: float = 0.3  # share of open-ended (rubric) items
    heldout_percent: int = 10  # share of the prompt-hash space reserved for evaluation
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.open_fraction <= 1.0:
            raise ValueError("open_fraction must be in [0, 1]")
        if not 0 <= self.heldout_percent < 100:
            raise ValueError("heldout_percent must be in [0, 100)")


def item(tag: str, criterion: str, *keywords: str) -> str:
    return str(RubricItem(tag, criterion, tuple(tuple(k.split("|")) for k in keywords)))


def molar_mass(formula: str) -> tuple[int, str]:
    """(M, the chain's sum 'a*b+c') of a formula in FORMULAS."""
    parts = FORMULAS[formula]
    terms = [f"{k}*{MASS[e]}" if k > 1 else f"{MASS[e]}" for e, k in parts]
    return sum(MASS[e] * k for e, k in parts), "+".join(terms)


# ---------------------------------------------------------------- verifiable families
def kinematics(rng: random.Random) -> dict:
    v0, a, t = rng.randint(0, 60), rng.randint(1, 12), rng.randint(1, 15)
    v = v0 + a * t
    return {"subject": "physics", "topic": "kinematics", "prompt": f"phys: v0={v0}m/s a={a}m/s2 t={t}s. v=?",
            "target": f"v=v0+a*t={v0}+{a}*{t}={v};#{v} m/s", "answer": f"{v} m/s"}  # fmt: skip


def distance(rng: random.Random) -> dict:
    v, t = rng.randint(1, 90), rng.randint(1, 15)
    return {"subject": "physics", "topic": "kinematics", "prompt": f"phys: v={v}m/s t={t}s. d=?",
            "target": f"d=v*t={v}*{t}={v * t};#{v * t} m", "answer": f"{v * t} m"}  # fmt: skip


def ohm(rng: random.Random) -> dict:
    i, r = rng.randint(1, 30), rng.randint(1, 40)
    return {"subject": "physics", "topic": "circuits", "prompt": f"phys: V={i * r}V R={r}ohm. I=?",
            "target": f"I=V/R={i * r}/{r}={i};#{i} A", "answer": f"{i} A"}  # fmt: skip


def power(rng: random.Random) -> dict:
    v, i = rng.randint(1, 60), rng.randint(1, 30)
    return {"subject": "physics", "topic": "circuits", "prompt": f"phys: V={v}V I={i}A. P=?",
            "target": f"P=V*I={v}*{i}={v * i};#{v * i} W", "answer": f"{v * i} W"}  # fmt: skip


def boyle(rng: random.Random) -> dict:
    v2 = rng.randint(1, 12)
    p1, v1 = 50 * rng.randint(1, 8), v2 * rng.randint(1, 6)
    p2 = p1 * v1 // v2
    return {"subject": "physics", "topic": "gas_laws", "prompt": f"phys: P1={p1}kPa V1={v1}L V2={v2}L, T fixed. P2=?",
            "target": f"P2=P1*V1/V2={p1}*{v1}/{v2}={p2};#{p2} kPa", "answer": f"{p2} kPa"}  # fmt: skip


def molar(rng: random.Random) -> dict:
    formula = rng.choice(sorted(FORMULAS))
    m, chain = molar_mass(formula)
    return {"subject": "chemistry", "topic": "molar_mass", "prompt": f"chem: molar mass of {formula}?",
            "target": f"M={chain}={m};#{m} g/mol", "answer": f"{m} g/mol"}  # fmt: skip


def stoichiometry(rng: random.Random) -> dict:
    formula, n = rng.choice(sorted(FORMULAS)), rng.randint(1, 40)
    m, _ = molar_mass(formula)
    return {"subject": "chemistry", "topic": "stoichiometry", "prompt": f"chem: n={n}mol of {formula}. m=?",
            "target": f"m=n*M={n}*{m}={n * m};#{n * m} g", "answer": f"{n * m} g"}  # fmt: skip


def parents(rng: random.Random, crosses: list[str]) -> tuple[str, str, str, str]:
    """(cross, the recessive genotype, left parent, right parent) with a random gene letter."""
    gene, cross = rng.choice(GENES), rng.choice(crosses)
    left, right = (p.replace("A", gene).replace("a", gene.lower()) for p in cross.split(" x "))
    return cross, gene.lower() * 2, left, right


def genetics(rng: random.Random) -> dict:
    cross, rec, left, right = parents(rng, sorted(CROSSES))
    num, den = CROSSES[cross]
    options = ["0", "1/4", "1/2", "3/4"]
    rng.shuffle(options)
    share = "0" if num == 0 else f"{num}/{den}"
    letter = "ABCD"[options.index(share)]
    listed = " ".join(f"{'ABCD'[k]}){o}" for k, o in enumerate(options))
    gives = [{0: "0", 1: "1/2", 2: "1"}[p.count(rec[0])] for p in (left, right)]
    chain = ";".join(f"{p} gives {rec[0]} {g}" for p, g in zip((left, right), gives, strict=True))
    return {"subject": "biology", "topic": "genetics", "prompt": f"bio: {left} x {right}. share {rec}? {listed}",
            "target": f"{chain};{gives[0]}*{gives[1]}={share};#{letter}", "answer": letter, "answer_type": "choice",
            "choices": options}  # fmt: skip


SYMBOLIC = (  # (prefix, subject, topic, what, chain, expression): answer_type math (math-verify)
    ("phys", "physics", "kinematics", "v from v0, a, t", "v=v0+a*t", "v0+a*t"),
    ("phys", "physics", "kinematics", "d from rest from a, t", "d=a*t^2/2", "a*t^2/2"),
    ("phys", "physics", "circuits", "I from V, R", "I=V/R", "V/R"),
    ("phys", "physics", "circuits", "P from V, R", "P=V*I;I=V/R", "V^2/R"),
    ("phys", "physics", "circuits", "P from I, R", "P=V*I;V=I*R", "I^2*R"),
    ("phys", "physics", "gas_laws", "P2 from P1, V1, V2", "P1*V1=P2*V2", "P1*V1/V2"),
    ("chem", "chemistry", "stoichiometry", "m from n, M", "m=n*M", "n*M"),
    ("chem", "chemistry", "stoichiometry", "n from m, M", "m=n*M", "m/M"),
)


def formula(rng: random.Random) -> dict:
    prefix, subject, topic, what, chain, expression = rng.choice(SYMBOLIC)
    return {"subject": subject, "topic": topic, "prompt": f"{prefix}: formula for {what}?",
            "target": f"{chain};#{expression}", "answer": expression, "answer_type": "math"}  # fmt: skip


# ---------------------------------------------------------------- open-ended families
FACTOR = {2: ("doubles", "halves"), 3: ("triples", "thirds"), 4: ("quadruples", "quarters")}


def ohm_effect(rng: random.Random) -> dict:
    changed, up, k = rng.choice("VR"), rng.random() < 0.5, rng.choice(sorted(FACTOR))
    fixed = "R" if changed == "V" else "V"
    low = rng.randint(1, 30)
    before, after = (low, low * k) if up else (low * k, low)
    unit = "V" if changed == "V" else "ohm"
    i_up = up if changed == "V" else not up
    move, effect, wrong = (
        f"{changed} {'up' if up else 'down'}",
        f"I {'up' if i_up else 'down'}",
        f"I {'down' if i_up else 'up'}",
    )
    word = FACTOR[k][0 if i_up else 1]
    return {
        "subject": "physics", "topic": "circuits",
        "prompt": f"phys why: {changed} {before}->{after}{unit}, {fixed} fixed. I? explain",
        "target": f"I=V/R;{fixed} fixed;{move} so {effect};#{word}", "answer": word,
        "rubric": [item("Essential", "uses Ohm's law I=V/R", "I=V/R"), item("Essential", f"says {move}", move),
                   item("Important", f"concludes {effect}", effect), item("Optional", f"notes {fixed} stays fixed",
                   f"{fixed} fixed"), item("Pitfall", f"claims {wrong}", wrong)],
    }  # fmt: skip


def gas_effect(rng: random.Random) -> dict:
    up, k, low = rng.random() < 0.5, rng.choice(sorted(FACTOR)), rng.randint(1, 30)
    before, after = (low, low * k) if up else (low * k, low)
    move, effect, wrong = f"V {'up' if up else 'down'}", f"P {'down' if up else 'up'}", f"P {'up' if up else 'down'}"
    word = FACTOR[k][1 if up else 0]
    return {
        "subject": "physics", "topic": "gas_laws", "prompt": f"phys why: V {before}->{after}L, T fixed. P? explain",
        "target": f"PV=const;T fixed;{move} so {effect};#{word}", "answer": word,
        "rubric": [item("Essential", "uses Boyle's law PV=const", "PV=const|P*V=const"),
                   item("Essential", f"says {move}", move), item("Important", f"concludes {effect}", effect),
                   item("Optional", "notes T stays fixed", "T fixed"), item("Pitfall", f"claims {wrong}", wrong)],
    }  # fmt: skip


def heavier(rng: random.Random) -> dict:
    a, b = rng.sample(sorted(f for f in FORMULAS if f not in ("CO", "N2")), 2)  # CO and N2 weigh the same
    if molar_mass(a)[0] == molar_mass(b)[0]:
        b = "CaCO3" if a != "CaCO3" else "H2O"
    (ma, _), (mb, _) = molar_mass(a), molar_mass(b)
    big, small = (a, b) if ma > mb else (b, a)
    hi, lo = max(ma, mb), min(ma, mb)
    return {
        "subject": "chemistry", "topic": "molar_mass", "prompt": f"chem why: heavier per mol, {a} or {b}? explain",
        "target": f"{a}={ma}g/mol;{b}={mb}g/mol;{hi}>{lo};#{big}", "answer": big,
        "rubric": [item("Essential", f"computes M of {a}", f"{a}={ma}"), item("Essential", f"computes M of {b}",
                   f"{b}={mb}"), item("Important", "compares the two masses", f"{hi}>{lo}"),
                   item("Optional", "gives units", "g/mol"), item("Pitfall", f"says {small} is heavier", f"{lo}>{hi}")],
    }  # fmt: skip


def cross_effect(rng: random.Random) -> dict:
    cross, rec, left, right = parents(rng, ["Aa x Aa", "Aa x aa"])
    both = cross == "Aa x Aa"
    share, g = ("1/4" if both else "1/2"), rec[0]
    second = f"{right} gives {g} {'1/2' if both else '1'}"
    product = "1/2*1/2=1/4" if both else "1/2*1=1/2"
    return {
        "subject": "biology", "topic": "genetics", "prompt": f"bio why: {left} x {right}. share {rec}? explain",
        "target": f"{left} gives {g} 1/2;{second};{product};#{share}", "answer": share,
        "rubric": [item("Essential", f"each {left} parent passes {g} with 1/2", f"{left} gives {g} 1/2"),
                   item("Essential", "multiplies the parents' probabilities", product.split("=")[0]),
                   item("Important", "states the share", f"={share}"), item("Optional", "treats the second parent",
                   second), item("Pitfall", "adds the probabilities", "1/2+1/2")],
    }  # fmt: skip


VERIFIABLE: tuple[Callable[[random.Random], dict], ...] = (
    kinematics, distance, ohm, power, boyle, molar, stoichiometry, genetics, formula,
)  # fmt: skip
OPEN: tuple[Callable[[random.Random], dict], ...] = (ohm_effect, gas_effect, heavier, cross_effect)


def generate(config: DrSciConfig) -> tuple[list[dict], list[dict]]:
    """(problems rows, sft_samples rows) for the store, both carrying the config fingerprint."""
    rng = random.Random(config.seed)
    fingerprint = config_fingerprint(config)
    seen: set[str] = set()
    problems, samples = [], []
    for _ in range(config.n):
        is_open = rng.random() < config.open_fraction
        raw = rng.choice(OPEN if is_open else VERIFIABLE)(rng)
        if raw["prompt"] in seen:
            continue
        seen.add(raw["prompt"])
        kind = "open" if is_open else "verifiable"
        split = "heldout" if is_heldout(raw["prompt"], config.heldout_percent) else "train"
        common = {"source": SOURCE, "split": split, "producer": "recipe:dr_sci", "config_hash": fingerprint}
        problems.append({
            **common, "prompt": raw["prompt"], "answer": raw["answer"],
            "answer_type": "rubric" if is_open else raw.get("answer_type", "quantity"),
            "choices": raw.get("choices"), "rubric": raw.get("rubric"), "taxonomy": f"{raw['subject']}/{raw['topic']}",
            "metadata": json.dumps({"subject": raw["subject"], "topic": raw["topic"], "kind": kind}),
        })  # fmt: skip
        samples.append({**common, "prompt": raw["prompt"], "target": raw["target"]})
    return problems, samples
