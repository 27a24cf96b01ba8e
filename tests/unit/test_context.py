"""The request and job context that logs, error reports and spans read (app.kit.context)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kit import context


def test_a_context_is_current_only_within_its_block_and_updates_reach_it() -> None:
    assert context.current() is None
    context.update(route="/nowhere")  # no request under way: nothing to change, no error
    clinic = uuid.uuid4()
    with context.bound(context.Context(request_id="r1")) as bound:
        assert context.current() is bound
        context.update(clinic_id=clinic, route="/api/v1/pets", job_id=7)
        assert bound.fields() == {
            "request_id": "r1",
            "clinic_id": str(clinic),  # ids as strings; everything else as it is
            "route": "/api/v1/pets",
            "job_id": 7,
        }
    assert context.current() is None


def test_where_a_request_came_from_is_kept_for_the_audit_trail_and_out_of_every_log() -> None:
    made = context.Context(
        request_id="r2", role="vet", action="records:write", client_ip="192.0.2.9", user_agent="UA"
    )

    assert (made.client_ip, made.user_agent) == ("192.0.2.9", "UA")
    assert made.fields() == {"request_id": "r2", "role": "vet", "action": "records:write"}


@pytest.mark.parametrize(
    "sent", ["abc", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "a.b:c_d-e", "x" * 128]
)
def test_a_valid_request_id_is_kept(sent: str) -> None:
    assert context.request_id_from(sent) == sent


@given(st.text(max_size=300))
def test_any_other_request_id_is_replaced_by_a_new_one(sent: str) -> None:
    chosen = context.request_id_from(sent)
    valid = 1 <= len(sent) <= 128 and all(
        c.isascii() and (c.isalnum() or c in "._:-") for c in sent
    )
    if valid:
        assert chosen == sent
    else:
        assert chosen != sent
        assert len(chosen) == 32
        assert int(chosen, 16) >= 0


def test_no_request_id_gets_a_new_one_each_time() -> None:
    assert context.request_id_from(None) != context.request_id_from(None)
