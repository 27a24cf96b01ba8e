"""``VETIFY_DEBUG`` is honoured (Starlette's traceback page), which is why production refuses it."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.harness.api import PROBLEM_JSON


@pytest.mark.parametrize("debug", [False, True])
async def test_debug_shows_tracebacks_and_only_then(debug: bool) -> None:
    app = create_app(
        Settings(_env_file=None, database_url="postgresql+asyncpg://u@h/x", debug=debug)
    )

    async def boom() -> None:
        raise RuntimeError("internal detail")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert ("internal detail" in response.text) is debug
    assert ("Traceback" in response.text) is debug
    if not debug:
        assert response.headers["content-type"] == PROBLEM_JSON
