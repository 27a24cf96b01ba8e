"""The web app's pages over HTTP, as a browser with JavaScript off uses them: log-in (with a
second factor), the day's book, clients and pets, the forms' errors and their CSRF token, and
the walls (another clinic's URL, a role without the permission, a visitor not logged in)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from decimal import Decimal
from html import unescape

import httpx
import pyotp
import pytest
from sqlalchemy import text

from app.auth.models import Role
from app.kit import csrf
from app.kit.clock import utcnow
from fixtures.factories import (
    DEFAULT_PASSWORD,
    AppointmentFactory,
    WeightFactory,
    create_customer,
    create_pet,
)
from tests.harness.api import PROBLEM_JSON, SIGNUP_PASSWORD
from tests.harness.plugin import page_client

HTML = "text/html; charset=utf-8"


def token_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the page has no form carrying the CSRF token"
    return found.group(1)


async def log_in(
    pages: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD, **fields: str
) -> httpx.Response:
    return await pages.post(
        "/login", data={"email": email, "password": password, "next": "/", **fields}
    )


async def logged_in(pages: httpx.AsyncClient, email: str) -> httpx.AsyncClient:
    answer = await log_in(pages, email)
    assert answer.status_code == 303, answer.text
    return pages


async def test_a_visitor_is_sent_to_log_in_and_back(pages):
    home = await pages.get("/")
    assert home.status_code == 303
    assert home.headers["location"] == "/login?next=/"
    searched = await pages.get("/clients", params={"q": "Rex"})
    assert searched.headers["location"] == "/login?next=/clients%3Fq%3DRex"
    # A form posted with no session is not redirected (what was typed would be lost): a page.
    posted = await pages.post("/clients/new", data={"first_name": "Ana", "last_name": "Lopes"})
    assert posted.status_code == 401
    assert posted.headers["content-type"] == HTML
    # htmx swaps parts of a page: it is told where to go instead.
    swapped = await pages.get("/clients", headers={"HX-Request": "true"})
    assert swapped.status_code == 204
    assert swapped.headers["HX-Redirect"].startswith("/login?next=")


async def test_the_login_page_is_html_under_the_strict_policy(pages):
    page = await pages.get("/login")
    assert page.status_code == 200
    assert page.headers["content-type"] == HTML
    policy = page.headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy
    assert "script-src 'self' 'nonce-" in policy
    assert page.headers["cache-control"] == "no-store"
    # Every input is named by a label.
    for field in re.findall(r'<input id="(\w+)"', page.text):
        assert f'<label for="{field}">' in page.text, field


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
async def test_after_log_in_the_browser_goes_only_to_this_site(pages, world, target):
    clinic = await world.clinic(roles=())
    answer = await log_in(pages, clinic.setup.owner.email, next=target)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"


async def test_a_wrong_password_is_a_page_saying_so_and_no_session(pages, world):
    clinic = await world.clinic(roles=())
    # pragma: allowlist nextline secret - a wrong guess
    wrong = {"email": clinic.setup.owner.email, "password": "not the password"}
    answer = await pages.post("/login", data=wrong)
    assert answer.status_code == 401
    assert 'role="alert"' in answer.text
    assert "vetify_session" not in answer.headers.get("set-cookie", "")


async def test_a_login_form_left_blank_is_answered_field_by_field(pages):
    blank = await pages.post("/login", data={"email": "", "password": ""})
    assert blank.status_code == 422
    assert 'href="#email"' in blank.text
    assert 'href="#password"' in blank.text


async def test_guessing_a_password_is_held_back_on_the_page_too(configured_app, world):
    clinic = await world.clinic(roles=())
    guess = {"email": clinic.setup.owner.email, "password": "guess"}  # pragma: allowlist secret
    async with configured_app(login_free_failures=1) as app, page_client(app) as pages:
        first = await pages.post("/login", data=guess)
        second = await pages.post("/login", data=guess)  # backs off from here
        throttled = await pages.post("/login", data=guess)
    assert [first.status_code, second.status_code, throttled.status_code] == [401, 401, 429]
    assert int(throttled.headers["Retry-After"]) > 0
    assert throttled.headers["content-type"] == HTML
    assert "www-authenticate" not in throttled.headers


async def test_a_method_a_page_does_not_take_is_a_page_naming_those_it_does(pages, world):
    clinic = await world.clinic(roles=())
    await logged_in(pages, clinic.setup.owner.email)
    answer = await pages.delete("/clients/new")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, POST"
    assert answer.headers["content-type"] == HTML


async def test_log_in_with_a_second_factor_then_log_out(pages, world):
    clinic = await world.clinic(roles=())
    secret = await world.enrol_mfa(clinic.setup.owner)
    email = clinic.setup.owner.email

    asked = await log_in(pages, email)
    assert asked.status_code == 401
    assert 'id="totp_code"' in asked.text  # the page now asks for the code
    wrong = await log_in(pages, email, totp_code="000000")
    assert wrong.status_code == 401
    assert 'aria-describedby="totp_code-hint totp_code-error"' in wrong.text
    done = await log_in(pages, email, totp_code=pyotp.TOTP(secret).now())
    assert done.status_code == 303, done.text

    today = await pages.get("/")
    assert today.status_code == 200
    out = await pages.post("/logout", data={"csrf_token": token_of(today)})
    assert out.status_code == 303
    assert out.headers["location"] == "/login?out=true"
    assert (await pages.get("/")).status_code == 303  # the session is gone


async def test_the_day_shows_its_appointments_in_the_clinics_time_with_alerts(pages, world):
    clinic = await world.clinic(roles=(), timezone="America/New_York")
    owner = clinic.setup.owner
    customer = await world.made(clinic, create_customer, first_name="Maria", last_name="Silva")
    pet = await world.made(
        clinic, create_pet, alerts=["Bites when muzzled"], customer_id=customer.id
    )
    # 12:30 in the clinic's zone, on its today (which need not be UTC's).
    zone = zoneinfo.ZoneInfo("America/New_York")
    starts = dt.datetime.now(zone).replace(hour=12, minute=30, second=0, microsecond=0)
    await world.make(
        clinic,
        AppointmentFactory,
        pet_id=pet.id,
        vet_id=owner.id,
        starts_at=starts,
        ends_at=starts + dt.timedelta(minutes=20),
    )
    await logged_in(pages, owner.email)
    day = await pages.get("/")
    assert day.status_code == 200
    text = unescape(day.text)
    assert pet.name in text
    assert "Maria Silva" in text
    assert "Bites when muzzled" in text
    assert "12:30\u202fPM" in text or "12:30 PM" in text  # the clinic's time, not UTC's


async def test_a_client_added_by_form_with_consent_and_a_pet(pages, world, client):
    clinic = await world.clinic(roles=(Role.receptionist,))
    desk = clinic.actors[Role.receptionist]
    await logged_in(pages, desk.user.email)
    form = await pages.get("/clients/new")
    assert form.status_code == 200
    made = await pages.post(
        "/clients/new",
        data={
            "csrf_token": token_of(form),
            "first_name": "Joana",
            "last_name": "Pires",
            "email": "joana@example.org",
            "phone": "+351912345678",
            "consents_email": "true",
        },
    )
    assert made.status_code == 303, made.text
    customer_id = made.headers["location"].rsplit("/", 1)[1]
    shown = await pages.get(made.headers["location"])
    assert "Joana Pires" in shown.text
    assert "joana@example.org" in shown.text

    # The API sees what the page made, consent included.
    stored = await client.get(f"/api/v1/customers/{customer_id}", headers=desk.headers)
    assert stored.json()["consents"]["email"]["granted"] is True
    assert stored.json()["consents"]["sms"]["granted"] is False

    pet_form = await pages.get(f"/clients/{customer_id}/pets/new")
    pet = await pages.post(
        f"/clients/{customer_id}/pets/new",
        data={
            "csrf_token": token_of(pet_form),
            "name": "Bolinha",
            "species": "cat",
            "neutered": "true",
            "alerts": "Diabetic\n\nScratches",
        },
    )
    assert pet.status_code == 303, pet.text
    profile = await pages.get(pet.headers["location"])
    assert "Bolinha" in profile.text
    assert "Diabetic" in profile.text
    assert "Scratches" in profile.text
    found = await pages.get("/clients", params={"q": "pires"})
    assert f"/clients/{customer_id}" in found.text


async def test_a_form_without_its_csrf_token_changes_nothing(pages, world, client):
    clinic = await world.clinic(roles=())
    await logged_in(pages, clinic.setup.owner.email)
    for token in (None, "forged", csrf.token_for("vts_another-session")):
        data = {"first_name": "Eve", "last_name": "Forger"}
        if token is not None:
            data["csrf_token"] = token
        refused = await pages.post("/clients/new", data=data)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == HTML
    listed = await client.get("/api/v1/customers", headers=clinic.owner.headers)
    assert listed.json()["items"] == []


async def test_a_form_from_another_site_is_refused(pages, world):
    clinic = await world.clinic(roles=())
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get("/clients/new")
    refused = await pages.post(
        "/clients/new",
        data={"csrf_token": token_of(form), "first_name": "A", "last_name": "B"},
        headers={"Origin": "https://evil.example"},
    )
    assert refused.status_code == 403


async def test_wrong_fields_are_named_linked_to_their_inputs_and_nothing_is_stored(
    pages, world, client
):
    clinic = await world.clinic(roles=())
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get("/clients/new")
    wrong = await pages.post(
        "/clients/new",
        data={
            "csrf_token": token_of(form),
            "first_name": "Ana",
            "last_name": "",
            "email": "not an address",
            "phone": "12",
        },
    )
    assert wrong.status_code == 422
    assert 'id="error-summary"' in wrong.text
    for field in ("last_name", "email", "phone"):
        assert f'href="#{field}"' in wrong.text  # the summary links to the field
        assert f'id="{field}-error"' in wrong.text
        assert re.search(rf'<input id="{field}"[^>]*aria-invalid="true"', wrong.text), field
    assert 'value="Ana"' in wrong.text  # what was typed stays
    listed = await client.get("/api/v1/customers", headers=clinic.owner.headers)
    assert listed.json()["items"] == []


async def test_a_wrong_pet_form_is_answered_field_by_field(pages, world, client):
    clinic = await world.clinic(roles=())
    customer = await world.made(clinic, create_customer)
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get(f"/clients/{customer.id}/pets/new")
    wrong = await pages.post(
        f"/clients/{customer.id}/pets/new",
        data={
            "csrf_token": token_of(form),
            "species": "dragon",
            "date_of_birth": "2999-01-01",
            "alerts": "x" * 300,
        },
    )
    assert wrong.status_code == 422
    for field in ("name", "species", "date_of_birth", "alerts"):
        assert f'id="{field}-error"' in wrong.text, field
    assert not re.search(r'<input id="neutered"[^>]* checked', wrong.text)
    pets = await client.get("/api/v1/pets", headers=clinic.owner.headers)
    assert pets.json()["items"] == []


async def test_a_taken_microchip_is_a_field_error_and_the_request_still_ends_cleanly(pages, world):
    clinic = await world.clinic(roles=())
    customer = await world.made(clinic, create_customer)
    await world.made(clinic, create_pet, customer_id=customer.id, microchip="985112345678901")
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get(f"/clients/{customer.id}/pets/new")
    taken = await pages.post(
        f"/clients/{customer.id}/pets/new",
        data={
            "csrf_token": token_of(form),
            "name": "Twin",
            "species": "dog",
            "neutered": "true",
            "microchip": "985112345678901",
        },
    )
    assert taken.status_code == 422
    assert 'id="microchip-error"' in taken.text
    assert re.search(r'<input id="neutered"[^>]* checked', taken.text)  # as it was sent
    # The session is still good: the failed insert was undone, not the request's transaction.
    assert (await pages.get(f"/clients/{customer.id}")).status_code == 200


async def test_another_clinics_pages_are_not_found_and_say_nothing_of_it(pages, world):
    mine = await world.clinic(roles=())
    theirs = await world.clinic(roles=())
    customer = await world.made(theirs, create_customer, first_name="Secreta", last_name="Alheia")
    pet = await world.made(theirs, create_pet, customer_id=customer.id, name="Escondido")
    await logged_in(pages, mine.setup.owner.email)
    for path in (
        f"/clients/{customer.id}",
        f"/clients/{customer.id}/pets/new",
        f"/pets/{pet.id}",
        f"/clients/{uuid.uuid4()}",
    ):
        answer = await pages.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == HTML
        assert "Secreta" not in answer.text
        assert "Escondido" not in answer.text


async def test_a_role_without_the_permission_gets_a_forbidden_page(pages, world):
    clinic = await world.clinic(roles=(Role.read_only,))
    await logged_in(pages, clinic.actors[Role.read_only].user.email)
    assert (await pages.get("/clients")).status_code == 200
    refused = await pages.get("/clients/new")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == HTML
    assert "Add a client" not in (await pages.get("/clients")).text


async def test_stored_markup_is_shown_as_text(pages, world):
    clinic = await world.clinic(roles=())
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    customer = await world.made(clinic, create_customer, first_name=payload, last_name="X")
    await world.made(clinic, create_pet, alerts=[payload], customer_id=customer.id, name=payload)
    await logged_in(pages, clinic.setup.owner.email)
    for path in ("/clients", f"/clients/{customer.id}"):
        page = await pages.get(path)
        assert payload not in page.text
        assert "&lt;script&gt;" in page.text


async def test_a_pets_weights_are_a_chart_and_a_table_in_the_clinics_formats(pages, world):
    clinic = await world.clinic(roles=(), country="DE", timezone="Europe/Berlin")
    customer = await world.made(clinic, create_customer)
    pet = await world.made(clinic, create_pet, customer_id=customer.id)
    for days, kilos in ((60, "12.5"), (30, "13.25"), (1, "1234.5")):
        await world.make(
            clinic,
            WeightFactory,
            pet_id=pet.id,
            weight_kg=Decimal(kilos),
            measured_at=utcnow() - dt.timedelta(days=days),
        )
    await logged_in(pages, clinic.setup.owner.email)
    profile = await pages.get(f"/pets/{pet.id}")
    assert '<svg class="chart"' in profile.text
    assert 'role="img"' in profile.text
    # German number formats: a decimal comma, a point between thousands.
    assert "12,50" in profile.text
    assert "13,25" in profile.text
    assert "1.234,50" in profile.text


async def test_the_api_answers_problem_json_whatever_the_browser_accepts(pages):
    answer = await pages.get("/api/v1/customers")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == PROBLEM_JSON
    unknown = await pages.get("/no-such-page")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == HTML


async def test_the_vendored_script_and_the_stylesheet_are_served(pages):
    for path in ("/static/htmx-2.0.11.min.js", "/static/vetify.js", "/static/vetify.css"):
        answer = await pages.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["cache-control"] == "no-cache"


async def _booking(world, roles=()):
    clinic = await world.clinic(roles=roles, timezone="Europe/Lisbon")
    customer = await world.made(clinic, create_customer, first_name="Rui", last_name="Book")
    pet = await world.made(clinic, create_pet, customer_id=customer.id, name="Farrusco")
    return clinic, pet


def _tomorrow() -> dt.date:
    return (dt.datetime.now(zoneinfo.ZoneInfo("Europe/Lisbon")) + dt.timedelta(days=1)).date()


async def test_a_booking_from_the_pets_page_then_its_steps_through_the_day(pages, world, client):
    clinic, pet = await _booking(world)
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get(f"/pets/{pet.id}/book")
    assert form.status_code == 200
    day = _tomorrow()
    booked = await pages.post(
        f"/pets/{pet.id}/book",
        data={
            "csrf_token": token_of(form),
            "date": day.isoformat(),
            "time": "09:30",
            "vet_id": str(clinic.setup.owner.id),
            "reason": "Vaccination",
        },
    )
    assert booked.status_code == 303, booked.text
    assert booked.headers["location"].startswith(f"/book?day={day.isoformat()}#a-")
    appointment_id = booked.headers["location"].rsplit("#a-", 1)[1]
    stored = await client.get(
        f"/api/v1/appointments/{appointment_id}", headers=clinic.owner.headers
    )
    # 09:30 in Lisbon, stored as the instant it is.
    starts = dt.datetime.fromisoformat(stored.json()["starts_at"])
    assert starts.astimezone(zoneinfo.ZoneInfo("Europe/Lisbon")).strftime("%H:%M") == "09:30"

    book = await pages.get(f"/book?day={day.isoformat()}")
    assert "Farrusco" in book.text
    for step in ("confirmed", "checked_in", "in_exam", "completed"):
        moved = await pages.post(
            f"/appointments/{appointment_id}/status",
            data={"csrf_token": token_of(book), "status": step},
        )
        assert moved.status_code == 303, (step, moved.text)
    done = await client.get(f"/api/v1/appointments/{appointment_id}", headers=clinic.owner.headers)
    assert done.json()["status"] == "completed"
    # Done is final: the service's refusal is a page, and nothing changes.
    again = await pages.post(
        f"/appointments/{appointment_id}/status",
        data={"csrf_token": token_of(book), "status": "cancelled"},
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == HTML
    nonsense = await pages.post(
        f"/appointments/{appointment_id}/status",
        data={"csrf_token": token_of(book), "status": "teleported"},
    )
    assert nonsense.status_code == 422


async def test_a_double_booking_is_said_on_the_form_and_nothing_is_stored(pages, world, client):
    clinic, pet = await _booking(world)
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get(f"/pets/{pet.id}/book")
    day = _tomorrow().isoformat()
    slot = {
        "csrf_token": token_of(form),
        "date": day,
        "time": "10:00",
        "vet_id": str(clinic.setup.owner.id),
    }
    assert (await pages.post(f"/pets/{pet.id}/book", data=slot)).status_code == 303
    clash = await pages.post(f"/pets/{pet.id}/book", data={**slot, "time": "10:05"})
    assert clash.status_code == 409
    assert 'role="alert"' in clash.text
    assert "That time is taken" in clash.text
    assert 'value="10:05"' in clash.text  # what was typed stays, to be changed
    listed = await client.get("/api/v1/appointments", headers=clinic.owner.headers)
    assert len(listed.json()["items"]) == 1


async def test_a_booking_form_is_held_to_the_apis_rules(pages, world, client):
    clinic, pet = await _booking(world)
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get(f"/pets/{pet.id}/book")
    token = token_of(form)
    missing = await pages.post(f"/pets/{pet.id}/book", data={"csrf_token": token})
    assert missing.status_code == 422
    assert 'id="date-error"' in missing.text
    assert 'id="vet_id-error"' in missing.text
    far = await pages.post(
        f"/pets/{pet.id}/book",
        data={
            "csrf_token": token,
            "date": "2999-01-01",
            "time": "09:00",
            "vet_id": str(clinic.setup.owner.id),
        },
    )
    assert far.status_code == 422
    assert 'id="date-error"' in far.text  # beyond the booking horizon
    stranger = await pages.post(
        f"/pets/{pet.id}/book",
        data={
            "csrf_token": token,
            "date": _tomorrow().isoformat(),
            "time": "09:00",
            "vet_id": str(uuid.uuid4()),
        },
    )
    assert stranger.status_code == 422
    assert 'id="vet_id-error"' in stranger.text
    listed = await client.get("/api/v1/appointments", headers=clinic.owner.headers)
    assert listed.json()["items"] == []


async def test_rescheduling_keeps_the_length_and_refuses_a_clash(pages, world, client):
    clinic, pet = await _booking(world)
    await logged_in(pages, clinic.setup.owner.email)
    form = await pages.get(f"/pets/{pet.id}/book")
    token = token_of(form)
    day = _tomorrow().isoformat()
    owner = str(clinic.setup.owner.id)
    for time in ("09:00", "11:00"):
        made = await pages.post(
            f"/pets/{pet.id}/book",
            data={"csrf_token": token, "date": day, "time": time, "vet_id": owner},
        )
        assert made.status_code == 303
    first = made.headers["location"].rsplit("#a-", 1)[1]  # the 11:00 one
    edit = await pages.get(f"/appointments/{first}/edit")
    assert 'value="11:00"' in edit.text
    clash = await pages.post(
        f"/appointments/{first}/edit",
        data={"csrf_token": token, "date": day, "time": "09:05", "vet_id": owner},
    )
    assert clash.status_code == 409
    moved = await pages.post(
        f"/appointments/{first}/edit",
        data={"csrf_token": token, "date": day, "time": "14:00", "vet_id": owner},
    )
    assert moved.status_code == 303, moved.text
    stored = (
        await client.get(f"/api/v1/appointments/{first}", headers=clinic.owner.headers)
    ).json()
    starts = dt.datetime.fromisoformat(stored["starts_at"])
    ends = dt.datetime.fromisoformat(stored["ends_at"])
    assert starts.astimezone(zoneinfo.ZoneInfo("Europe/Lisbon")).strftime("%H:%M") == "14:00"
    assert ends - starts == dt.timedelta(minutes=15)  # the length it had
    blank = await pages.post(f"/appointments/{first}/edit", data={"csrf_token": token})
    assert blank.status_code == 422
    stranger = await pages.post(
        f"/appointments/{first}/edit",
        data={"csrf_token": token, "date": day, "time": "15:00", "vet_id": str(uuid.uuid4())},
    )
    assert stranger.status_code == 422
    assert 'id="vet_id-error"' in stranger.text


async def test_a_day_that_is_not_a_date_shows_the_clinics_today(pages, world):
    clinic, _ = await _booking(world)
    await logged_in(pages, clinic.setup.owner.email)
    today = dt.datetime.now(zoneinfo.ZoneInfo("Europe/Lisbon")).date()
    shown = await pages.get("/book", params={"day": "31-02-20"})
    assert shown.status_code == 200
    assert f"/book?day={today + dt.timedelta(days=1)}" in shown.text


SIGN_UP = {
    "clinic_name": "Harbour Vets",
    "timezone": "Europe/Lisbon",
    "owner_name": "Rita Costa",
    "password": SIGNUP_PASSWORD,
}


async def test_a_clinic_signed_up_by_its_page_opens_and_its_owner_logs_in(pages, client):
    form = await pages.get("/signup")
    assert form.status_code == 200
    email = f"rita.{uuid.uuid4().hex[:8]}@example.org"
    opened = await pages.post("/signup", data={**SIGN_UP, "email": email})
    assert opened.status_code == 303, opened.text
    assert opened.headers["location"] == "/login?opened=true"
    welcome = await pages.get(opened.headers["location"])
    assert "Your clinic is open" in welcome.text
    assert (await log_in(pages, email, password=SIGNUP_PASSWORD)).status_code == 303
    day = await pages.get("/")
    assert "Harbour Vets" in day.text


async def test_a_sign_up_form_is_held_to_the_apis_rules_and_stores_nothing(pages, superuser_engine):
    async with superuser_engine.connect() as connection:
        before = await connection.scalar(text("SELECT count(*) FROM clinics"))
    wrong = await pages.post(
        "/signup",
        data={
            **SIGN_UP,
            "email": "rita@example.org",
            "timezone": "Mars/Olympus",
            "password": "short",  # pragma: allowlist secret - too short, refused
        },
    )
    assert wrong.status_code == 422
    for field in ("timezone", "password"):
        assert f'id="{field}-error"' in wrong.text, field
    assert "short" not in wrong.text  # a password is never shown back
    from_elsewhere = await pages.post(
        "/signup",
        data={**SIGN_UP, "email": "rita@example.org"},
        headers={"Origin": "https://evil.example"},
    )
    assert from_elsewhere.status_code == 403
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM clinics")) == before


async def test_an_existing_account_signs_up_a_second_clinic_with_its_password_and_code(
    pages, world
):
    clinic = await world.clinic(roles=())
    secret = await world.enrol_mfa(clinic.setup.owner)
    sent = {**SIGN_UP, "email": clinic.setup.owner.email, "password": DEFAULT_PASSWORD}
    # pragma: allowlist nextline secret - a wrong guess
    wrong = await pages.post("/signup", data={**sent, "password": "not the one at all"})
    assert wrong.status_code == 401
    asked = await pages.post("/signup", data=sent)
    assert asked.status_code == 401
    assert 'id="totp_code"' in asked.text
    bad_code = await pages.post("/signup", data={**sent, "totp_code": "000000"})
    assert 'id="totp_code-error"' in bad_code.text
    opened = await pages.post("/signup", data={**sent, "totp_code": pyotp.TOTP(secret).now()})
    assert opened.status_code == 303, opened.text
