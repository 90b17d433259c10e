"""Images in the store: content-addressed files under the root, referenced by hash from rows.

    <root>/_media/<first 2 hex>/<sha256 hex>        the image's bytes, as given (PNG, JPEG, ...)

Why files and not a binary column: one image serves many rows (a CoTZero scene is asked several
questions), so a column would repeat its bytes on each; every scan of `problems` (samplers,
SQL by users) would read image bytes it does not need; and an engine loads an image only for the
prompts it renders. A reference (`media:sha256:...`, schemas/media.py) holds no path, so nothing
can point outside the root; the same bytes are one file (a second put is a no-op).

A put is validated (size, format, pixel count, and a full decode) and published with the store's
temp + link (storage/layout.py): a crash leaves no partial file under a final name, and two
writers of the same image race harmlessly. Rows reach here through `ReplayStore.write`: a row's
`image` field (bytes, base64 text or a PIL image) is put and becomes its `media_ref`; a corrupt
image or a reference to an image the store does not hold quarantines the row with the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonloop.schemas.media import PREFIX, digest_of, is_media_ref, media_ref
from reasonloop.storage.layout import publish, temp_path

MEDIA_DIR = "_media"


class MediaError(ValueError):
    """An image that cannot go into the store, with the reason in words."""


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = 16 * 2**20  # per image, encoded
    max_pixels: int = 4096 * 4096  # width x height, checked before decoding (decompression bombs)
    formats: frozenset[str] = field(default_factory=lambda: frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"}))


def check_image(data: bytes, limits: MediaLimits) -> tuple[str, int, int]:
    """(format, width, height) of an image that decodes in full within the limits; else MediaError."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise MediaError("image is empty")
    if len(data) > limits.max_bytes:
        raise MediaError(f"image is {len(data)} bytes, over the {limits.max_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            fmt, (width, height) = image.format or "?", image.size
            if fmt not in limits.formats:
                raise MediaError(f"image format {fmt} is not one of {', '.join(sorted(limits.formats))}")
            if width * height > limits.max_pixels:
                raise MediaError(f"image is {width}x{height}, over the {limits.max_pixels}-pixel limit")
            image.load()  # decodes every pixel: a truncated or corrupt body fails here
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"image does not decode: {exc}") from exc
    return fmt, width, height


def image_bytes(value: Any) -> bytes:
    """Bytes of an image given as bytes, base64 text (optionally a data: URI) or a PIL image."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"image text is not base64: {exc}") from exc
    if hasattr(value, "save") and hasattr(value, "size"):  # a PIL image
        out = io.BytesIO()
        value.save(out, format="PNG")
        return out.getvalue()
    raise MediaError(f"image must be bytes, base64 text or a PIL image, not {type(value).__name__}")


class MediaStore:
    def __init__(self, root: str | os.PathLike, *, limits: MediaLimits | None = None, sync: bool = False) -> None:
        self.dir = Path(root) / MEDIA_DIR
        self.limits = limits or MediaLimits()
        self.sync = sync

    def path(self, ref: str) -> Path:
        digest = digest_of(ref)
        return self.dir / digest[:2] / digest

    def exists(self, ref: str) -> bool:
        return is_media_ref(ref) and self.path(ref).is_file()

    def put(self, data: bytes) -> str:
        """Validate and store an image; its reference. Idempotent."""
        check_image(data, self.limits)
        ref = media_ref(data)
        final = self.path(ref)
        if final.is_file():
            return ref
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(final.parent)
        tmp.write_bytes(data)
        publish(tmp, final, exclusive=True, sync=self.sync)  # False: another writer published it first
        return ref

    def get(self, ref: str) -> bytes:
        """The bytes of a stored image, checked against their hash (a file damaged on disk raises)."""
        try:
            data = self.path(ref).read_bytes()
        except FileNotFoundError:
            raise MediaError(f"the store holds no image {ref}") from None
        if hashlib.sha256(data).hexdigest() != digest_of(ref):
            raise MediaError(f"image {ref} is damaged on disk (its bytes no longer match their hash)")
        return data

    def open_image(self, ref: str) -> Any:
        """A stored image as an RGB PIL image."""
        from PIL import Image

        return Image.open(io.BytesIO(self.get(ref))).convert("RGB")

    def refs(self) -> Iterator[str]:
        if self.dir.is_dir():
            for sub in sorted(self.dir.iterdir()):
                for f in sorted(sub.iterdir()) if sub.is_dir() else ():
                    if len(f.name) == 64:
                        yield PREFIX + f.name

    def copy_to(self, refs: set[str], out: str | os.PathLike) -> int:
        """Copy the named images to another root's media folder (an export); how many were copied."""
        target = MediaStore(out, limits=self.limits)
        copied = 0
        for ref in sorted(refs):
            if not target.exists(ref) and self.exists(ref):
                target.path(ref).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path(ref), target.path(ref))
                copied += 1
        return copied


def attach_media(media: MediaStore, rows: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Rows with their `image` put and turned into `media_ref`, and every `media_ref` checked to
    name a stored image: (good rows, [(raw row, reason), ...]). A rejected row's image is kept in
    its quarantined form as base64, so nothing is lost."""
    good, bad = [], []
    for row in rows:
        if not isinstance(row, dict) or ("image" not in row and not row.get("media_ref")):
            good.append(row)
            continue
        row = dict(row)
        image = row.pop("image", None)
        try:
            if image is not None:
                ref = media.put(image_bytes(image))
                if row.get("media_ref") not in (None, ref):
                    raise MediaError(f"media_ref {row['media_ref']} is not the hash of the row's image ({ref})")
                row["media_ref"] = ref
            ref = row.get("media_ref")
            if ref is not None and not is_media_ref(ref):
                raise MediaError(f"media_ref must be a {PREFIX}<hex> reference to the store's media "
                                 f"(give the image itself in the row's `image` field), not {ref!r}")  # fmt: skip
            if ref is not None and not media.exists(ref):
                raise MediaError(f"the store holds no image {ref}")
            good.append(row)
        except MediaError as exc:
            raw = dict(row)
            if image is not None:
                raw["image"] = (
                    base64.b64encode(bytes(image)).decode()
                    if isinstance(image, (bytes, bytearray, memoryview))
                    else image
                )
            bad.append((raw, str(exc)))
    return good, bad
