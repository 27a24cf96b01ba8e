"""A real browser against the running service's API: the interactive docs at /docs, a login,
its cookie, and logout, called from a page of the service's own origin as a front end would
(the web app's own pages: tests/e2e/test_web_app.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness.api import PROBLEM_JSON, login_request

SESSION_COOKIE = "vetify_session"

# fetch() from the page: the browser's own cookie jar, SameSite and Secure rules apply. As the
# service's own front end would, the page echoes the CSRF token from its cookie on unsafe
# requests; the browser adds Origin itself.
FETCH_JSON = """async ([method, path, body]) => {
    const init = {method, headers: {accept: "application/json"}};
    const csrf = document.cookie.split("; ").find((c) => c.startsWith("vetify_csrf="));
    if (csrf && !["GET", "HEAD"].includes(method)) {
        init.headers["x-csrf-token"] = csrf.slice("vetify_csrf=".length);
    }
    if (body !== null) {
        init.headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    return {
        status: response.status,
        contentType: response.headers.get("content-type"),
        body: text ? JSON.parse(text) : null,
    };
}"""


def call(page: Page, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return page.evaluate(FETCH_JSON, [method, path, body])


# Every Content-Security-Policy violation the page causes, as the browser reports it.
RECORD_CSP_VIOLATIONS = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
    window.cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI}`);
});"""


def open_docs(page: Page) -> None:
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto("/docs")  # returns once the page and its scripts have loaded (or failed to)
    # The service serves Swagger UI's script itself; the browser may reach nothing else.
    assert page.evaluate("typeof SwaggerUIBundle === 'function'"), "Swagger UI did not load"
    # Swagger UI renders client-side: wait for the operations, not for a fixed time.
    expect(page.locator("#operations-tag-auth")).to_be_visible()
    # The docs work under their strict policy (nonce-only inline script), not despite it.
    assert page.evaluate("window.cspViolations") == []


def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    return next((dict(c) for c in context.cookies() if c["name"] == SESSION_COOKIE), None)


def test_docs_page_lists_the_api(page: Page, reports_dir: Path) -> None:
    open_docs(page)

    expect(page).to_have_title(re.compile("Vetify"))
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Vetify")
    for tag in ("auth", "customers", "pets", "appointments"):
        expect(page.locator(f"#operations-tag-{tag}")).to_be_visible()
    expect(page.locator("#operations-pets-list_pets_api_v1_pets_get")).to_contain_text(
        "/api/v1/pets"
    )
    page.screenshot(path=reports_dir / "docs.png")


def test_login_through_swagger_ui_sets_a_locked_down_session_cookie(
    page: Page, context: BrowserContext
) -> None:
    open_docs(page)
    login = page.locator("#operations-auth-login_api_v1_auth_login_post")
    login.locator(".opblock-summary").click()
    login.get_by_role("button", name="Try it out").click()
    login.locator("textarea.body-param__text").fill(
        f'{{"email": "{DEMO_EMAIL}", "password": "{DEMO_PASSWORD}"}}'
    )
    login.get_by_role("button", name="Execute").click()
    status = login.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("200")

    me = call(page, "GET", "/api/v1/auth/me")
    assert me["status"] == 200, me
    assert me["body"]["user"]["email"] == DEMO_EMAIL
    assert me["body"]["role"] == "owner"

    cookie = session_cookie(context)
    assert cookie is not None, context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert SESSION_COOKIE not in page.evaluate("document.cookie")


def test_logged_in_page_lists_pets_until_logout(page: Page, context: BrowserContext) -> None:
    page.goto("/docs")
    anonymous = call(page, "GET", "/api/v1/pets")
    assert anonymous["status"] == 401, anonymous

    request = login_request(DEMO_EMAIL, DEMO_PASSWORD)
    login = call(page, "POST", request["url"], request["json"])
    assert login["status"] == 200, login
    assert login["body"]["clinic"]["name"] == "Riverside Veterinary Clinic"

    pets = call(page, "GET", "/api/v1/pets?limit=10")
    assert pets["status"] == 200, pets
    assert len(pets["body"]["items"]) == 10
    assert all(pet["name"] for pet in pets["body"]["items"])

    cookie = session_cookie(context)
    assert cookie is not None
    logout = call(page, "POST", "/api/v1/auth/logout")
    assert logout["status"] == 204, logout
    assert session_cookie(context) is None

    after = call(page, "GET", "/api/v1/pets?limit=10")
    assert after["status"] == 401, after
    assert after["contentType"].startswith(PROBLEM_JSON)
    assert after["body"]["status"] == 401

    # The server revoked the session too: the old cookie, put back, opens nothing.
    context.add_cookies([cookie])  # type: ignore[list-item]
    replayed = call(page, "GET", "/api/v1/pets?limit=10")
    assert replayed["status"] == 401, replayed
    assert replayed["contentType"].startswith(PROBLEM_JSON)
