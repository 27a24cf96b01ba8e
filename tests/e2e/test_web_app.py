"""The web app in a real browser: whole journeys from a clean clinic, by mouse and by keyboard
alone, every page and state they reach checked by axe-core (WCAG 2.0/2.1/2.2 A and AA) with
its report and a screenshot kept in reports/e2e, under the strict Content-Security-Policy.

The journeys the pages built so far allow (ADR 0043): log-in with a second factor and log-out;
a client registered with consent and a pet, found again by search as you type; a wrong form
answered field by field; another clinic's URL pasted in. The appointment book, records, staff
and billing pages come with their own journeys.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Page, expect

from app.auth.service import SESSION_COOKIE
from app.kit import csrf
from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness.api import SIGNUP_PASSWORD, login_sync, signup_body, signup_sync
from tests.harness.live import LiveServer

WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
AXE = Axe()

# Every Content-Security-Policy violation the page causes, as the browser reports it.
RECORD_CSP_VIOLATIONS = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
    window.cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI}`);
});"""


class Checks:
    """axe on each state a journey reaches, its report and a screenshot kept by name."""

    def __init__(self, page: Page, reports: Path, journey: str) -> None:
        self.page, self.reports, self.journey = page, reports, journey

    def state(self, name: str) -> None:
        self.page.wait_for_load_state("load")
        results = AXE.run(self.page, options={"runOnly": {"type": "tag", "values": WCAG}})
        stem = f"{self.journey}--{name}"
        (self.reports / f"{stem}.axe.json").write_text(
            json.dumps(results.response["violations"], indent=1)
        )
        self.page.screenshot(path=self.reports / f"{stem}.png", full_page=True)
        assert results.violations_count == 0, f"{stem}:\n{results.generate_report()}"
        assert self.page.evaluate("window.cspViolations") == [], stem


@pytest.fixture
def checks(page: Page, reports_dir: Path, request: pytest.FixtureRequest) -> Checks:
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    return Checks(page, reports_dir, request.node.name.removeprefix("test_").split("[")[0])


def new_clinic(live_server: LiveServer, **fields: Any) -> dict[str, Any]:
    """A clinic signed up through the API, as a clean start for one journey: its owner's email."""
    body = signup_body(**fields)
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        made = signup_sync(http, body)
        assert made.status_code == 201, made.text
    return body


def enrol_second_factor(live_server: LiveServer, email: str) -> tuple[str, list[str]]:
    """Turn a second factor on for ``email`` through the API: the authenticator's secret and
    the recovery codes."""
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        login = login_sync(http, email, SIGNUP_PASSWORD)
        assert login.status_code == 200, login.text
        headers = {
            "Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}",
            "Origin": live_server.url,
            csrf.CSRF_HEADER: login.json()["csrf_token"],
        }
        http.cookies.clear()
        started = http.post("/api/v1/auth/mfa/totp", headers=headers)
        assert started.status_code == 201, started.text
        secret: str = started.json()["secret"]
        confirmed = http.post(
            "/api/v1/auth/mfa/totp/confirm",
            json={"code": pyotp.TOTP(secret).now()},
            headers=headers,
        )
        assert confirmed.status_code == 200, confirmed.text
        return secret, confirmed.json()["recovery_codes"]


def next_code(secret: str) -> str:
    """The authenticator's next code: this step's was spent confirming the enrolment, and a
    code is accepted once (the next step's is within the allowed drift)."""
    return pyotp.TOTP(secret).at(time.time() + pyotp.TOTP(secret).interval)


def client_with_pet(live_server: LiveServer, email: str) -> str:
    """A client and their pet, added through the API by ``email``: the pet's id."""
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        login = login_sync(http, email, SIGNUP_PASSWORD)
        assert login.status_code == 200, login.text
        http.cookies.clear()
        headers = {
            "Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}",
            "Origin": live_server.url,
            csrf.CSRF_HEADER: login.json()["csrf_token"],
        }
        customer = http.post(
            "/api/v1/customers", json={"first_name": "Rui", "last_name": "Book"}, headers=headers
        )
        assert customer.status_code == 201, customer.text
        pet = http.post(
            "/api/v1/pets",
            json={"customer_id": customer.json()["id"], "name": "Farrusco", "species": "dog"},
            headers=headers,
        )
        assert pet.status_code == 201, pet.text
        pet_id: str = pet.json()["id"]
        return pet_id


def log_in(page: Page, email: str, password: str = SIGNUP_PASSWORD) -> None:
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_sign_a_clinic_up_and_log_in(page: Page, checks: Checks) -> None:
    page.goto("/login")
    page.get_by_role("link", name="Sign your clinic up").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign your clinic up")
    checks.state("empty")
    email = f"owner-{uuid.uuid4().hex[:10]}@example.org"
    page.get_by_label("Clinic's name").fill("Seaside Vets")
    page.get_by_label("Time zone").fill("Europe/Lisbon")
    page.get_by_label("Your name").fill("Marta Silva")
    page.get_by_label("Your email address").fill(email)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Open the clinic").click()
    expect(page.get_by_role("alert")).to_be_focused()
    checks.state("errors")
    page.get_by_label("Password").fill(SIGNUP_PASSWORD)
    page.get_by_role("button", name="Open the clinic").click()
    expect(page.get_by_role("status").first).to_contain_text("Your clinic is open")
    log_in(page, email)
    expect(page.get_by_role("banner")).to_contain_text("Seaside Vets")


def test_log_in_with_a_second_factor_and_log_out(
    page: Page, live_server: LiveServer, checks: Checks
) -> None:
    clinic = new_clinic(live_server, clinic_name="Harbour Vets")
    secret, recovery_codes = enrol_second_factor(live_server, clinic["email"])

    page.goto("/clients")
    expect(page).to_have_url(re.compile(r"/login\?next=/clients$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    checks.state("empty")

    log_in(page, clinic["email"], "not the password")
    expect(page.get_by_role("alert")).to_contain_text("There is a problem")
    checks.state("wrong-password")

    log_in(page, clinic["email"])
    code = page.get_by_label("Authentication code")
    expect(code).to_be_focused()
    checks.state("code-asked")
    page.get_by_label("Password").fill(SIGNUP_PASSWORD)
    code.fill(next_code(secret))
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(r"/clients$"))  # back where the visitor was going
    expect(page.get_by_role("banner")).to_contain_text("Harbour Vets")
    expect(page.locator("#results").get_by_text("No clients match.")).to_be_visible()
    checks.state("no-clients")

    page.get_by_role("link", name="Today").click()
    expect(page.get_by_text("No appointments today.")).to_be_visible()
    checks.state("empty-day")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status").first).to_have_text("You have logged out.")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))

    # The phone is lost: a recovery code logs in instead, once.
    log_in(page, clinic["email"])
    page.get_by_label("Password").fill(SIGNUP_PASSWORD)
    page.get_by_label("Authentication code").fill(recovery_codes[0])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Today")


def test_a_client_with_consent_and_a_pet_then_found_by_search(
    page: Page, context: BrowserContext, live_server: LiveServer, checks: Checks
) -> None:
    clinic = new_clinic(live_server)
    page.goto("/login")
    log_in(page, clinic["email"])
    page.get_by_role("link", name="Clients").click()
    page.get_by_role("link", name="Add a client").click()
    checks.state("new-client")

    # A wrong form: each error named at the top, linked to its field, the field marked.
    page.get_by_label("First name").fill("Joana")
    page.get_by_label("Email address").fill("not an address")
    page.get_by_role("button", name="Save client").click()
    summary = page.get_by_role("alert")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("link")).to_have_count(2)  # last name, email
    expect(page.get_by_label("Email address")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("First name")).to_have_value("Joana")
    checks.state("new-client-errors")

    summary.get_by_role("link", name=re.compile("Email address")).click()
    expect(page.get_by_label("Email address")).to_be_focused()
    page.get_by_label("Last name").fill("Pires")
    page.get_by_label("Email address").fill("joana.pires@example.org")
    page.get_by_label("Phone").fill("+351912345678")
    page.get_by_role("group", name="May we contact this client by").get_by_label("Email").check()
    page.get_by_role("button", name="Save client").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Joana Pires")
    expect(page.get_by_text("joana.pires@example.org")).to_be_visible()
    checks.state("client")

    page.get_by_role("link", name="Add a pet").click()
    page.get_by_label("Name").fill("Bolinha")
    page.get_by_label("Species").select_option("cat")
    page.get_by_label("Neutered").check()
    page.get_by_label("Alerts").fill("Diabetic\nScratches when held")
    checks.state("new-pet")
    page.get_by_role("button", name="Save pet").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bolinha")
    expect(page.get_by_role("list", name="Alerts")).to_contain_text("Diabetic")
    checks.state("pet")

    # Search as you type: htmx swaps the results in; the count is announced.
    page.get_by_role("link", name="Clients").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Clients")
    page.wait_for_load_state("load")  # htmx binds the page at DOMContentLoaded, before this
    page.wait_for_function("() => window.htmx !== undefined")
    page.get_by_label("Search clients").press_sequentially("pir", delay=30)
    expect(page).to_have_url(re.compile(r"/clients\?q=pir"))
    expect(page.get_by_role("link", name="Pires, Joana")).to_be_visible()
    expect(page.locator("#announcer")).to_have_text("1 clients shown.")
    checks.state("search")
    page.get_by_label("Search clients").fill("nobody-like-this")
    expect(page.locator("#results").get_by_text("No clients match.")).to_be_visible()
    expect(page.locator("#announcer")).to_have_text("No clients match.")


def test_book_see_a_double_booking_refused_reschedule_and_check_in(
    page: Page, live_server: LiveServer, checks: Checks
) -> None:
    clinic = new_clinic(live_server, timezone="Europe/Lisbon")
    pet_id = client_with_pet(live_server, clinic["email"])
    tomorrow = (dt.datetime.now(zoneinfo.ZoneInfo("Europe/Lisbon")) + dt.timedelta(days=1)).date()
    page.goto(f"/pets/{pet_id}")
    log_in(page, clinic["email"])

    def book_at(time_of_day: str) -> None:
        page.get_by_role("link", name="Book an appointment").click()
        page.get_by_label("Date", exact=True).fill(tomorrow.isoformat())
        page.get_by_label("Time", exact=True).fill(time_of_day)
        page.get_by_role("button", name="Book").click()

    book_at("09:30")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Book,")
    expect(page.get_by_role("row", name=re.compile("Farrusco"))).to_have_count(1)
    page.go_back()
    page.go_back()
    checks.state("new-appointment")

    book_at("09:35")  # the vet is busy then
    clash = page.get_by_role("alert")
    expect(clash).to_be_focused()
    expect(clash).to_contain_text("That time is taken")
    checks.state("clash")
    page.get_by_label("Time", exact=True).fill("11:00")
    page.get_by_role("button", name="Book").click()
    rows = page.get_by_role("row", name=re.compile("Farrusco"))
    expect(rows).to_have_count(2)
    checks.state("day")

    page.get_by_role("link", name=re.compile("Reschedule Farrusco at 11:00")).click()
    page.get_by_label("Time", exact=True).fill("15:00")
    page.get_by_role("button", name="Reschedule").click()
    moved = re.compile(r"Reschedule Farrusco at (15:00|3:00\sPM)")  # as the clinic writes it
    expect(page.get_by_role("link", name=moved)).to_be_visible()

    # htmx posts the step and swaps the book in place; the change is announced. (Clicked once
    # htmx has loaded: before that the button posts the form, which works too, unannounced.)
    page.wait_for_load_state("load")
    page.wait_for_function("() => window.htmx !== undefined")
    page.get_by_role("button", name=re.compile(r"Check in: Farrusco at 0?9:30")).click()
    expect(page.get_by_role("row", name=re.compile("Farrusco")).first).to_contain_text("Checked in")
    expect(page.locator("#announcer")).to_have_text("The book is updated.")
    checks.state("checked-in")


def test_the_same_journey_by_keyboard_alone(
    page: Page, live_server: LiveServer, checks: Checks
) -> None:
    """No mouse: the skip link first, a visible focus on every stop, forms sent with Enter."""
    clinic = new_clinic(live_server)
    page.goto("/login")
    keyboard = page.keyboard

    def tab_to(name: str, *, limit: int = 25) -> None:
        for _ in range(limit):
            keyboard.press("Tab")
            focused = page.evaluate(
                "() => { const e = document.activeElement;"
                " return [e.labels?.[0]?.innerText || e.innerText || e.value || '',"
                " getComputedStyle(e).outlineStyle]; }"
            )
            assert focused[1] != "none", f"no visible focus on {focused[0]!r}"
            if focused[0].strip().startswith(name):
                return
        raise AssertionError(f"{name!r} is not reachable with Tab")

    tab_to("Skip to main content")
    keyboard.press("Enter")
    tab_to("Email address")
    keyboard.type(clinic["email"])
    tab_to("Password")
    keyboard.type(SIGNUP_PASSWORD)
    keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Today")

    tab_to("Clients")
    keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Clients")
    tab_to("Add a client")
    keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Add a client")
    tab_to("First name")
    keyboard.type("Tiago")
    tab_to("Last name")
    keyboard.type("Keys")
    tab_to("Email")
    keyboard.press("Space")  # the consent's checkbox
    keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Tiago Keys")
    tab_to("Add a pet")
    keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Add a pet")
    tab_to("Name")
    keyboard.type("Rato")
    tab_to("Species")
    keyboard.press("ArrowDown")  # the next species: a cat
    tab_to("Save pet")
    keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Rato")
    checks.state("pet-by-keyboard")


def test_the_demo_clinics_day_and_a_patient_with_its_weight_chart(
    page: Page, live_server: LiveServer, checks: Checks
) -> None:
    """What a newcomer sees after `vetify demo`: a filled day, a patient's alerts and weights."""
    page.goto("/")
    log_in(page, DEMO_EMAIL, DEMO_PASSWORD)
    expect(page.get_by_role("banner")).to_contain_text("Riverside Veterinary Clinic")
    book = page.get_by_role("table")
    expect(book.get_by_role("row")).not_to_have_count(0)
    expect(book.get_by_role("columnheader", name="Alerts")).to_be_visible()
    checks.state("day")

    book.get_by_role("row").nth(1).get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Weight history")).to_be_visible()
    chart = page.get_by_role("img", name=re.compile("Weight of .* over time"))
    expect(chart).to_be_visible()
    weights = page.get_by_role("table", name=re.compile("Weight of"))
    expect(weights.get_by_role("row")).to_have_count(4)  # a heading and three weighings
    checks.state("patient")


def test_another_clinics_urls_show_the_not_found_page(
    page: Page, live_server: LiveServer, checks: Checks
) -> None:
    theirs = new_clinic(live_server)
    page.goto("/login")
    log_in(page, theirs["email"])
    page.get_by_role("link", name="Clients").click()
    page.get_by_role("link", name="Add a client").click()
    page.get_by_label("First name").fill("Secreta")
    page.get_by_label("Last name").fill("Alheia")
    page.get_by_role("button", name="Save client").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Secreta Alheia")
    their_url = page.url
    page.get_by_role("button", name="Log out").click()

    mine = new_clinic(live_server)
    log_in(page, mine["email"])
    page.goto(their_url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    assert "Secreta" not in page.content()
    checks.state("not-found")


def test_the_pages_have_landmarks_headings_and_names(page: Page, live_server: LiveServer) -> None:
    """What a screen reader reads of a page: its accessibility tree (Playwright's snapshot)."""
    clinic = new_clinic(live_server)
    page.goto("/login")
    log_in(page, clinic["email"])
    page.goto("/clients/new")
    tree = page.locator("body").aria_snapshot()
    for expected in (
        '- link "Skip to main content"',
        "- banner:",
        '- navigation "Main":',
        '- link "Clients"',
        "- main:",
        '- heading "Add a client" [level=1]',
        '- textbox "First name"',
        '- group "May we contact this client by":',
        '- checkbox "WhatsApp"',
        '- button "Save client"',
    ):
        assert expected in tree, f"{expected!r} not in:\n{tree}"
