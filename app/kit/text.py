"""Text PostgreSQL cannot store: NUL (``text`` refuses it) and unpaired UTF-16 surrogates
(not UTF-8). Found anywhere in a request, it is a 422 on that place, before any statement."""

from __future__ import annotations

from typing import Any

from app.kit.problems import FieldError, InvalidInput

MESSAGE = "holds text that cannot be stored: a NUL character or an unpaired surrogate"


def storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable_at(value: Any) -> list[str | int] | None:
    """Where in a JSON value (its keys included) the first unstorable text is, if anywhere."""
    pending: list[tuple[list[str | int], Any]] = [([], value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not storable(key):
                    return where
                pending.append(([*where, key], inner))
        elif isinstance(item, list):
            pending += [([*where, index], inner) for index, inner in enumerate(item)]
        elif isinstance(item, str) and not storable(item):
            return where
    return None


def refusal(loc: list[str | int]) -> InvalidInput:
    return InvalidInput(
        "See errors for the fields at fault.",
        [FieldError(loc=loc, msg=MESSAGE, type="unstorable_text")],
    )
