"""CoTZero's atomic level: scenes composed bottom-up from primitives, with the scene graph as truth.

A scene is a few shapes on a `grid` x `grid` board of square cells. Each object has a shape
(square, circle, triangle), a colour, a size and a cell:

    large   fills its cell edge to edge        small   half the cell, centred

Relations are defined on the graph, and the renderer draws exactly what they say:

    left_of(a, b)    a's column < b's column         above(a, b)     a's row < b's row
    inside(a, b)     same cell, a small, b large     touching(a, b)  edge-adjacent cells, both large
    count(v)         objects whose colour or shape is v

Two objects share a cell only as small-inside-large (different colours, so the small one is
visible); a (colour, shape) pair appears once, so "the red circle" names one object. Rendering
is Pillow without anti-aliasing: the same scene gives the same bytes on every machine.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

SHAPES = ("square", "circle", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
SIZES = ("small", "large")
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True, order=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    row: int
    col: int

    @property
    def name(self) -> str:
        """How questions refer to it: unique within a scene."""
        return f"{self.colour} {self.shape}"

    @property
    def cell(self) -> tuple[int, int]:
        return self.row, self.col

    def describe(self) -> str:
        """Its full description, as the text-only prompt and the chain's local step give it."""
        return f"{self.size} {self.colour} {self.shape} {self.row},{self.col}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # sorted: a scene's text and graph do not depend on draw order
    grid: int = 3

    def find(self, colour: str, shape: str) -> SceneObject | None:
        return next((o for o in self.objects if o.colour == colour and o.shape == shape), None)

    def composition(self) -> str:
        """What the scene is made of, regardless of where: the key held-out splits are drawn by."""
        return "|".join(sorted(f"{o.size} {o.colour} {o.shape}" for o in self.objects))

    def text(self) -> str:
        """The scene graph serialized for text-only models."""
        return "; ".join(o.describe() for o in self.objects)

    def to_json(self) -> dict:
        return {"grid": self.grid, "objects": [o.describe() for o in self.objects]}

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        objects = []
        for text in data["objects"]:
            size, colour, shape, cell = text.split()
            row, col = (int(x) for x in cell.split(","))
            objects.append(SceneObject(colour, shape, size, row, col))
        return cls(tuple(sorted(objects)), int(data["grid"]))


def left_of(a: SceneObject, b: SceneObject) -> bool:
    return a.col < b.col


def above(a: SceneObject, b: SceneObject) -> bool:
    return a.row < b.row


def inside(a: SceneObject, b: SceneObject) -> bool:
    return a.cell == b.cell and a.size == "small" and b.size == "large"


def touching(a: SceneObject, b: SceneObject) -> bool:
    adjacent = abs(a.row - b.row) + abs(a.col - b.col) == 1
    return adjacent and a.size == "large" and b.size == "large"


RELATIONS = {"left of": left_of, "above": above, "inside": inside, "touching": touching}


def count(scene: Scene, value: str) -> int:
    return sum(1 for o in scene.objects if value in (o.colour, o.shape))


def triples(scene: Scene) -> list[tuple[str, str, str]]:
    """(entity, relation, entity-or-value): the graph as CoTZero's triples (attr, locate, exist)."""
    out = [(o.name, "exist", "yes") for o in scene.objects] + [(o.name, "size", o.size) for o in scene.objects]
    for a in scene.objects:
        out += [(a.name, rel, b.name) for b in scene.objects if b is not a for rel, fn in RELATIONS.items() if fn(a, b)]
    return out


def sample_scene(rng: random.Random, *, grid: int = 3, min_objects: int = 2, max_objects: int = 4) -> Scene:
    """Objects placed one by one; a draw that breaks a rule (taken cell, repeated colour+shape,
    a nested pair of one colour) is redrawn."""
    target = rng.randint(min_objects, max_objects)
    objects: list[SceneObject] = []
    while len(objects) < target:
        candidate = SceneObject(
            rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(SIZES), rng.randrange(grid), rng.randrange(grid)
        )
        if _fits(candidate, objects):
            objects.append(candidate)
    return Scene(tuple(sorted(objects)), grid)


def _fits(candidate: SceneObject, objects: list[SceneObject]) -> bool:
    if any(o.name == candidate.name for o in objects):
        return False
    same_cell = [o for o in objects if o.cell == candidate.cell]
    if not same_cell:
        return True
    (other,) = same_cell if len(same_cell) == 1 else (None,)
    if other is None or other.size == candidate.size or other.colour == candidate.colour:
        return False
    return True


def render(scene: Scene, *, cell_px: int = 16) -> bytes:
    """The scene as PNG bytes (RGB, grid * cell_px square). Large objects first, so a small one
    nested in a large one is drawn on top of it."""
    from PIL import Image, ImageDraw

    side = scene.grid * cell_px
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in sorted(scene.objects, key=lambda o: o.size != "large"):
        x0, y0 = o.col * cell_px, o.row * cell_px
        inset = 0 if o.size == "large" else cell_px // 4
        box = (x0 + inset, y0 + inset, x0 + cell_px - 1 - inset, y0 + cell_px - 1 - inset)
        fill = COLOURS[o.colour]
        if o.shape == "square":
            draw.rectangle(box, fill=fill)
        elif o.shape == "circle":
            draw.ellipse(box, fill=fill)
        else:
            draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def centre_colour(png: bytes, obj: SceneObject, *, cell_px: int = 16) -> tuple[int, int, int]:
    """The rendered pixel at the centre of an object's cell (what a nested small object covers)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    half = cell_px // 2
    return image.getpixel((obj.col * cell_px + half, obj.row * cell_px + half))
