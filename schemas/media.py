"""How a row refers to an image: `media:sha256:<hex digest of its bytes>` (problems.media_ref).

A reference names content, not a place: the same image from two recipes or runs is one file, a
reference can never point outside the store (it holds no path), and a row's id can include it
without depending on where the store lives. storage/media.py keeps the bytes.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "media:sha256:"
REF_PATTERN = re.compile(r"media:sha256:[0-9a-f]{64}")


def media_ref(data: bytes) -> str:
    """The reference of some bytes."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def is_media_ref(value: object) -> bool:
    return isinstance(value, str) and REF_PATTERN.fullmatch(value) is not None


def digest_of(ref: str) -> str:
    """The hex digest in a reference; a malformed reference raises ValueError."""
    if not is_media_ref(ref):
        raise ValueError(f"not a media reference (want {PREFIX}<64 hex>): {ref!r}")
    return ref[len(PREFIX) :]
