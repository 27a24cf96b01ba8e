"""How much of each payload family a generated attack suite sends to each place it attacks.

Every place (route, parameter, body field) gets every family on every run: the surface is never
sampled. Within a family, a pull request sends ``per_place`` members chosen from the place's
name (the same on every run, so coverage stays steady and a failure replays), the nightly run
(``VETIFY_SWEEP=full``) every member everywhere. Which members a place gets differs from place
to place, so across the surface a pull request still sends every member of every family.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def full() -> bool:
    mode = os.environ.get("VETIFY_SWEEP", "sample").strip() or "sample"
    if mode not in ("sample", "full"):
        raise ValueError(f"VETIFY_SWEEP={mode!r}: use 'sample' (pull requests) or 'full'")
    return mode == "full"


def members(family: Sequence[T], *where: object, per_place: int = 1) -> list[T]:
    """The members of ``family`` that the place named by ``where`` gets on this run."""
    if full() or per_place >= len(family):
        return list(family)
    start = _offset(where, len(family))
    return [family[(start + offset) % len(family)] for offset in range(per_place)]


def one(items: Sequence[T], *where: object) -> T:
    """The one of ``items`` that the place named by ``where`` gets: the same on every run,
    different places spread over all of them."""
    return items[_offset(where, len(items))]


def _offset(where: tuple[object, ...], size: int) -> int:
    return zlib.crc32(repr(where).encode()) % size
