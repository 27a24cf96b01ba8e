"""tests/harness/sweep.py: a sample of each payload family per place, every member at night."""

from __future__ import annotations

import pytest

from tests.harness import sweep

FAMILY = [f"payload {n}" for n in range(7)]
PLACES = [("GET /api/v1/pets", name) for name in ("q", "species", "cursor", "limit", "owner")]


def test_a_pull_request_sends_a_steady_sample_and_all_places_together_send_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VETIFY_SWEEP", raising=False)
    chosen = [sweep.members(FAMILY, *place, per_place=2) for place in PLACES]
    assert all(len(members) == 2 and len(set(members)) == 2 for members in chosen)
    assert chosen == [sweep.members(FAMILY, *place, per_place=2) for place in PLACES]
    assert len({member for members in chosen for member in members}) > 2
    assert sweep.members(FAMILY[:2], "x", per_place=3) == FAMILY[:2]


def test_the_nightly_sweep_sends_every_member_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETIFY_SWEEP", "full")
    assert all(sweep.members(FAMILY, *place) == FAMILY for place in PLACES)
    monkeypatch.setenv("VETIFY_SWEEP", "everything")
    with pytest.raises(ValueError, match="VETIFY_SWEEP"):
        sweep.members(FAMILY, "x")
