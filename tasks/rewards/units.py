"""Quantities with units: `answer_type=quantity` ("11 m/s", "0.5 A", "44 g/mol").

A completion's answer is right when its last number, read in its unit, equals the gold quantity in
SI within a relative tolerance (1% by default: science answers are rounded). Units convert by
factor within a dimension (km/h <-> m/s, mA <-> A, kPa <-> atm, g <-> kg); a different dimension
is wrong; a bare number is read in the gold's unit. Offset scales (degrees C/F) are not converted:
they are left out of the table, so an answer in them is compared only to the same written unit.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from reasonloop.tasks.rewards.answers import extract_answer
from reasonloop.tasks.rewards.registry import register_reward, safe_scores

REL_TOL = 1e-2


class Unit(NamedTuple):
    dimension: str
    factor: float  # SI value of 1 of this unit


UNITS: dict[str, Unit] = {
    "m": Unit("length", 1.0), "km": Unit("length", 1e3), "cm": Unit("length", 1e-2), "mm": Unit("length", 1e-3),
    "s": Unit("time", 1.0), "ms": Unit("time", 1e-3), "min": Unit("time", 60.0), "h": Unit("time", 3600.0),
    "m/s": Unit("speed", 1.0), "km/h": Unit("speed", 1 / 3.6), "cm/s": Unit("speed", 1e-2),
    "m/s2": Unit("acceleration", 1.0),
    "V": Unit("voltage", 1.0), "mV": Unit("voltage", 1e-3), "kV": Unit("voltage", 1e3),
    "A": Unit("current", 1.0), "mA": Unit("current", 1e-3),
    "ohm": Unit("resistance", 1.0), "kohm": Unit("resistance", 1e3),
    "W": Unit("power", 1.0), "mW": Unit("power", 1e-3), "kW": Unit("power", 1e3),
    "J": Unit("energy", 1.0), "kJ": Unit("energy", 1e3),
    "Pa": Unit("pressure", 1.0), "kPa": Unit("pressure", 1e3), "bar": Unit("pressure", 1e5),
    "atm": Unit("pressure", 101_325.0),
    "L": Unit("volume", 1e-3), "mL": Unit("volume", 1e-6), "m3": Unit("volume", 1.0),
    "kg": Unit("mass", 1.0), "g": Unit("mass", 1e-3), "mg": Unit("mass", 1e-6),
    "mol": Unit("amount", 1.0), "mmol": Unit("amount", 1e-3),
    "g/mol": Unit("molar_mass", 1e-3), "kg/mol": Unit("molar_mass", 1.0),
    "N": Unit("force", 1.0), "K": Unit("temperature", 1.0),
}  # fmt: skip
ALIASES = {"m/s^2": "m/s2", "Ω": "ohm", "ohms": "ohm", "kΩ": "kohm", "l": "L", "ml": "mL",
           "m^3": "m3", "sec": "s", "hr": "h", "amp": "A", "amps": "A", "volt": "V", "volts": "V"}  # fmt: skip
_QUANTITY = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zΩ][A-Za-zΩ0-9/^]*)?")


class Quantity(NamedTuple):
    value: float
    unit: str  # as written after aliasing ("" when bare)


def parse_quantity(text: str) -> Quantity | None:
    """The last number in `text` and the unit written right after it, or None."""
    found = _QUANTITY.findall(text.replace(",", ""))
    if not found:
        return None
    number, unit = found[-1]
    unit = unit.strip().rstrip(".")
    return Quantity(float(number), ALIASES.get(unit, unit))


def to_si(q: Quantity) -> tuple[str, float] | None:
    """(dimension, SI value), or None for a unit not in the table."""
    unit = UNITS.get(q.unit)
    return None if unit is None else (unit.dimension, q.value * unit.factor)


def same_quantity(candidate: Quantity, gold: Quantity, rel_tol: float = REL_TOL) -> bool:
    if not candidate.unit:
        candidate = Quantity(candidate.value, gold.unit)
    a, b = to_si(candidate), to_si(gold)
    if a is None or b is None:  # an unknown unit only matches itself
        a, b = (candidate.unit, candidate.value), (gold.unit, gold.value)
    return a[0] == b[0] and math.isfinite(a[1]) and math.isclose(a[1], b[1], rel_tol=rel_tol, abs_tol=1e-12)


def _quantity(text: str, answer: Any) -> float:
    gold = parse_quantity(str(answer))
    if gold is None:
        raise ValueError(f"gold answer {answer!r} is not a quantity")
    found = parse_quantity(extract_answer(text))
    return float(found is not None and same_quantity(found, gold))


def canonical_quantity(text: str) -> str | None:
    """`text` as '<value> <unit>' in the table's spelling (None if it is not a quantity)."""
    q = parse_quantity(text)
    return None if q is None else f"{q.value:g} {q.unit}".strip()


@register_reward("quantity")
def quantity(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """1 if the extracted answer is the gold quantity (units converted, 1% relative tolerance)."""
    return safe_scores(_quantity, completions, answer)
