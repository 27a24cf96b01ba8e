"""Resource ids: UUIDv7, time-ordered so that B-tree indexes stay compact and ids sort by age."""

from __future__ import annotations

import uuid

import uuid_utils.compat


def new_id() -> uuid.UUID:
    return uuid_utils.compat.uuid7()
