"""Personal data never reaches a log (issue 19): a customer whose names, email and phone are the
run's personal canaries (tests/harness/canary.py) goes through the API's paths, and the stage's
leak watch, searching every log record of the run as the service writes it, fails the run on
any of them."""

from __future__ import annotations

import logging

import httpx

from tests.harness import canary
from tests.harness.world import World

CUSTOMERS = "/api/v1/customers"


def test_the_watch_finds_personal_data_in_a_record_and_redaction_removes_it() -> None:
    before = len(canary.WATCH.leaks)
    logging.getLogger("vetify").info("planted: %s", canary.PERSON_EMAIL)
    assert len(canary.WATCH.leaks) == before + 1
    del canary.WATCH.leaks[before:]  # planted by this test, not leaked by the app
    # Under a known key, it is redacted before anything is written.
    logging.getLogger("vetify").info(
        "planted", extra={"customer": {"email": canary.PERSON_EMAIL, "phone": canary.PERSON_PHONE}}
    )
    assert len(canary.WATCH.leaks) == before


async def test_a_customers_life_logs_none_of_their_personal_data(
    client: httpx.AsyncClient, world: World
) -> None:
    clinic = await world.clinic()
    headers = clinic.owner.headers
    person = {
        "first_name": canary.PERSON_FIRST_NAME,
        "last_name": canary.PERSON_LAST_NAME,
        "email": canary.PERSON_EMAIL,
        "phone": canary.PERSON_PHONE,
    }
    created = await client.post(CUSTOMERS, json=person, headers=headers)
    assert created.status_code == 201, created.text
    url = f"{CUSTOMERS}/{created.json()['id']}"

    for value in person.values():
        found = await client.get(CUSTOMERS, params={"q": value, "limit": 5}, headers=headers)
        assert found.status_code == 200, found.text
        assert [c["id"] for c in found.json()["items"]] == [created.json()["id"]]
    changed = await client.patch(url, json={"last_name": canary.PERSON_FIRST_NAME}, headers=headers)
    assert changed.status_code == 200, changed.text
    # Refused input that holds the data: the 422 and whatever is logged of it.
    refused = await client.patch(
        url,
        json={"phone": f"{canary.PERSON_PHONE}x", "email": canary.PERSON_LAST_NAME},
        headers=headers,
    )
    assert refused.status_code == 422
    # Another clinic asking for them: a 404, and a permission denied logged, neither naming them.
    other = await world.clinic()
    assert (await client.get(url, headers=other.owner.headers)).status_code == 404
    assert (await client.delete(url, headers=headers)).status_code == 204
    assert canary.WATCH.logs_watched  # the stage's watch searched every record of this test
