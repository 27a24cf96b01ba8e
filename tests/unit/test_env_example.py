"""`.env.example` lists exactly the settings, each with its real default and a comment above it,
so it cannot fall behind Settings."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from app.settings import Settings, env_name

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
ASSIGNMENT = re.compile(r"^#\s?(VETIFY_[A-Z0-9_]+)=(.*)$")


def _documented() -> dict[str, tuple[str, str]]:
    """Each setting written in the file: (default written, the comment line above it)."""
    lines = EXAMPLE.read_text().splitlines()
    found: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match:
            above = next(
                (lines[i] for i in range(number - 1, -1, -1) if not ASSIGNMENT.match(lines[i])),
                "",
            )
            found[match[1]] = (match[2], above)
    return found


def _written(default: object) -> str:
    if default is None:
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, SecretStr):
        return default.get_secret_value()
    if isinstance(default, list):  # comma-separated settings
        return ",".join(map(str, default))
    if isinstance(default, dict):  # comma-separated KEY=VALUE pairs
        return ",".join(f"{key}={value}" for key, value in default.items())
    return str(default)


def test_env_example_lists_exactly_the_settings() -> None:
    expected = {env_name(name) for name in Settings.model_fields}
    documented = set(_documented())
    missing, extra = sorted(expected - documented), sorted(documented - expected)
    assert (missing, extra) == ([], []), (
        f".env.example is out of date: add {missing or 'nothing'} "
        f"(as '# NAME=default' under a comment), remove {extra or 'nothing'}"
    )


def test_env_example_states_each_default_under_a_comment() -> None:
    documented = _documented()
    wrong = {
        env_name(name): (documented[env_name(name)][0], _written(field.default))
        for name, field in Settings.model_fields.items()
        if env_name(name) in documented and documented[env_name(name)][0] != _written(field.default)
    }
    assert not wrong, f".env.example defaults differ from Settings (written, real): {wrong}"
    uncommented = [name for name, (_, above) in documented.items() if not above.startswith("#")]
    assert not uncommented, f".env.example: describe {uncommented} in a comment above it"


def test_env_example_sets_nothing_when_copied() -> None:
    """Every assignment is commented out: a copied .env changes nothing until edited."""
    live = [line for line in EXAMPLE.read_text().splitlines() if line.startswith("VETIFY_")]
    assert not live, f".env.example: comment out {live}"
