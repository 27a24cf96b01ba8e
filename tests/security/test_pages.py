"""The web app's pages under the attack suites: every page of the route table, for every role
(the reviewed table's ``[pages]``), from another clinic, with no log-in, without or with a
forged CSRF token, for its headers, and with hostile text stored in what it shows.

The pages are discovered from the app (``tests/security/pages.py``); a page the suites cannot
reach fails here, named, as a route of the API does in the API's suites.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import httpx
import pytest
from markupsafe import escape

from app.auth.models import Role
from app.kit import csrf
from app.kit.headers import ALWAYS
from fixtures.factories import AppointmentFactory, create_customer, create_pet
from tests.harness import browser
from tests.harness.world import World
from tests.security.catalogue import ID_KINDS, explain
from tests.security.estate import fresh, rows_of
from tests.security.pages import GUARDED, PAGES, Page
from tests.security.surface import outside_the_trail
from tests.security.test_authorization import ANYONE, audited, audited_changes, who_may
from tests.security.test_xss import XSS

WHO_MAY_PAGES = who_may("pages")
HTML = "text/html; charset=utf-8"
FORMS = [page for page in GUARDED if page.method == "POST"]
WITH_IDS = [page for page in GUARDED if page.path_params]
SHOWN = [page for page in GUARDED if page.method == "GET"]


async def request(
    http: httpx.AsyncClient,
    page: Page,
    url: str,
    *,
    session: str | None,
    form: dict[str, str] | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """``page`` as a browser with JavaScript off opens or posts it: logged in with ``session``
    (or not), the form carrying ``token`` (by default, the session's own)."""
    http.cookies.clear()
    if session is not None:
        http.cookies.update(browser.cookies(session))
    if page.method == "GET":
        return await http.get(url, headers=headers)
    data = dict(form or {})
    token = token if token is not None else (csrf.token_for(session) if session else None)
    if token:
        data[csrf.FORM_FIELD] = token
    return await http.post(url, data=data, headers=headers)


def test_every_page_can_be_attacked() -> None:
    problems = [problem for page in PAGES for problem in page.problems()]
    assert not problems, "\n".join(problems)


def test_the_table_names_every_page_and_only_pages_the_app_serves() -> None:
    served = {page.label for page in PAGES}
    assert sorted(served - WHO_MAY_PAGES.keys()) == [], "pages missing from who_may.toml"
    assert sorted(WHO_MAY_PAGES.keys() - served) == [], "who_may.toml names pages the app lacks"
    public = {label for label, who in WHO_MAY_PAGES.items() if who == ANYONE}
    assert public == {page.label for page in PAGES if page.public}


@pytest.mark.parametrize("page", GUARDED, ids=lambda p: p.label)
async def test_page_obeys_who_may_do_what(
    pages: httpx.AsyncClient, world: World, superuser_engine, estates, page: Page
) -> None:
    allowed = WHO_MAY_PAGES[page.label]
    assert isinstance(allowed, frozenset), page.label
    estate, _ = estates
    clinic = estate.clinic
    failures = []
    for role in Role:
        actor = clinic.actors[role]
        ids = {
            ID_KINDS[name]: await fresh(world, clinic, ID_KINDS[name], actor)
            for name in page.path_params
        }
        session = await world.login(actor)
        before = await rows_of(superuser_engine, clinic.id)
        answer = await request(pages, page, page.url(ids), session=session, form=page.form(estate))
        if role in allowed:
            if answer.status_code not in (200, 303):
                failures.append(f"{role} may, but got {explain(answer)}")
            elif page.method == "POST":
                changed = audited_changes(before, await rows_of(superuser_engine, clinic.id))
                recorded = await audited(superuser_engine, clinic.id, answer)
                assert page.action is not None
                if (changed and not recorded) or any(
                    action != page.action.value for action, _ in recorded
                ):
                    failures.append(f"{role}: changed {sorted(changed)}, the trail: {recorded}")
        elif answer.status_code != 403 or answer.headers["content-type"] != HTML:
            failures.append(f"{role} may not, but got {explain(answer)}")
        elif outside_the_trail(await rows_of(superuser_engine, clinic.id)) != outside_the_trail(
            before
        ):
            failures.append(f"{role}: the refused request changed the clinic's data")
    assert not failures, f"{page.label}:\n" + "\n".join(failures)


@pytest.mark.parametrize("page", WITH_IDS, ids=lambda p: p.label)
async def test_another_clinics_ids_are_not_found(
    pages: httpx.AsyncClient, world: World, superuser_engine, estates, page: Page
) -> None:
    mine, theirs = estates
    session = await world.login(mine.clinic.owner)
    before = await rows_of(superuser_engine, theirs.clinic.id)
    url = page.url({ID_KINDS[name]: theirs[ID_KINDS[name]] for name in page.path_params})
    answer = await request(pages, page, url, session=session, form=page.form(mine))
    assert answer.status_code == 404, explain(answer)
    assert answer.headers["content-type"] == HTML
    assert await rows_of(superuser_engine, theirs.clinic.id) == before


@pytest.mark.parametrize("page", GUARDED, ids=lambda p: p.label)
async def test_no_log_in_no_page(
    pages: httpx.AsyncClient, superuser_engine, estates, page: Page
) -> None:
    estate, _ = estates
    before = await rows_of(superuser_engine, estate.clinic.id)
    url = page.url({ID_KINDS[name]: estate[ID_KINDS[name]] for name in page.path_params})
    answer = await request(pages, page, url, session=None, form=page.form(estate))
    if page.method == "GET":
        assert answer.status_code == 303, explain(answer)
        assert answer.headers["location"].startswith("/login?next=")
    else:
        assert answer.status_code == 401, explain(answer)
        assert answer.headers["content-type"] == HTML
    assert await rows_of(superuser_engine, estate.clinic.id) == before


@pytest.mark.parametrize("page", FORMS, ids=lambda p: p.label)
async def test_a_form_without_the_sessions_token_or_from_another_site_is_refused(
    pages: httpx.AsyncClient, world: World, superuser_engine, estates, page: Page
) -> None:
    estate, _ = estates
    session = await world.login(estate.clinic.owner)
    other_session = await world.login(estate.clinic.actors[Role.admin])
    url = page.url({ID_KINDS[name]: estate[ID_KINDS[name]] for name in page.path_params})
    before = await rows_of(superuser_engine, estate.clinic.id)
    attempts = {
        "no token": {"token": ""},
        "a made-up token": {"token": "forged"},
        "another session's token": {"token": csrf.token_for(other_session)},
        "another site's page": {"headers": {"Origin": "https://evil.example"}},
        "a page with no origin": {"headers": {"Origin": "null"}},
    }
    for why, attempt in attempts.items():
        answer = await request(pages, page, url, session=session, form=page.form(estate), **attempt)
        assert answer.status_code == 403, f"{why}: {explain(answer)}"
        assert answer.headers["content-type"] == HTML, why
    assert await rows_of(superuser_engine, estate.clinic.id) == before


@pytest.mark.parametrize("page", [p for p in PAGES if p.method == "GET"], ids=lambda p: p.label)
async def test_every_page_carries_the_page_policy_and_the_headers(
    pages: httpx.AsyncClient, world: World, estates, page: Page
) -> None:
    estate, _ = estates
    session = None if page.public else await world.login(estate.clinic.owner)
    url = page.url({ID_KINDS[name]: estate[ID_KINDS[name]] for name in page.path_params})
    nonces = set()
    for _ in range(2):
        answer = await request(pages, page, url, session=session)
        assert answer.status_code == 200, explain(answer)
        assert answer.headers["content-type"] == HTML
        policy = answer.headers["content-security-policy"]
        found = re.search(r"script-src 'self' 'nonce-([\w-]+)'", policy)
        assert found, policy
        assert "unsafe" not in policy
        nonces.add(found.group(1))
        assert answer.headers["cache-control"] == "no-store"
        for name, value in ALWAYS.items():
            assert answer.headers[name] == value, name
        # Every script and style is the site's own file: nothing inline, nothing from elsewhere.
        assert re.findall(r"<script(?![^>]*\bsrc=\"/static/)", answer.text) == []
        assert "<style" not in answer.text
        assert " style=" not in answer.text
    assert len(nonces) == 2, "a nonce was used twice"


async def test_stored_markup_is_shown_as_text_on_every_page(
    pages: httpx.AsyncClient, world: World, estates
) -> None:
    estate, _ = estates
    clinic = estate.clinic
    hostile = [payload for payload in XSS if set(payload) & set("<>\"'&")]
    customer = await world.made(
        clinic,
        create_customer,
        first_name=hostile[0][:100],
        last_name=hostile[1][:100],
        city=hostile[2][:100],
    )
    pet = await world.made(
        clinic,
        create_pet,
        alerts=[p[:100] for p in hostile],
        customer_id=customer.id,
        name=hostile[3][:50],
        breed=hostile[4][:50],
    )
    zone = zoneinfo.ZoneInfo(clinic.setup.clinic.timezone)
    starts = dt.datetime.now(zone).replace(hour=6, minute=5, second=0, microsecond=0)
    booked = await world.make(
        clinic,
        AppointmentFactory,
        pet_id=pet.id,
        vet_id=clinic.owner.user.id,
        starts_at=starts,
        ends_at=starts + dt.timedelta(minutes=20),
        reason=hostile[5][:100],
    )
    ids = {"customer": customer.id, "pet": pet.id, "appointment": booked.id}
    session = await world.login(clinic.owner)
    shown = 0
    for page in SHOWN:
        url = page.url({ID_KINDS[n]: ids[ID_KINDS[n]] for n in page.path_params})
        for query in ("", f"?q={hostile[0][:50]}"):
            answer = await request(pages, page, url + query, session=session)
            assert answer.status_code == 200, explain(answer)
            for payload in hostile:
                assert payload[:50] not in answer.text, f"{page.label} shows {payload!r} as markup"
            shown += any(str(escape(p[:50]))[:20] in answer.text for p in hostile)
    assert shown >= 4, "the pages did not show the stored text at all"
