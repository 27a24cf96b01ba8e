"""What `vetify serve` logs of a request: never the personal data a query string carries.

Found from outside (issue 16, defect 12): a search for a pet owner (``q``, which holds names,
email addresses and phone numbers) was written whole to the access log, where it outlives
every retention rule the data itself is under.
"""

from __future__ import annotations

import random
import uuid

import httpx

from tests.chaos.conftest import Outcome
from tests.harness.live import LiveServer


async def test_the_access_log_holds_no_search_term(
    live_server: LiveServer, api: httpx.AsyncClient, chaos: Outcome
) -> None:
    marker = uuid.uuid4().hex[:12]
    phone = f"3519{random.randrange(10**7, 10**8)}"
    searches = [
        ("/api/v1/customers", {"q": f"Silva{marker}", "limit": 5}),
        ("/api/v1/customers", {"q": f"ana.{marker}@example.com"}),
        ("/api/v1/customers", {"q": f"+{phone}"}),
        ("/api/v1/pets", {"q": f"Rex{marker}", "limit": 1}),
    ]
    for path, params in searches:
        response = await api.get(path, params=params)
        assert response.status_code == 200, response.text

    log = live_server.log_path.read_text(errors="replace")
    logged = [line for line in log.splitlines() if "/api/v1/customers?" in line]
    chaos.details.update(searches=len(searches), last_lines=logged[-3:])
    assert marker not in log
    assert phone not in log
    # Each request is logged (vetify.access), its parameters named, those that are harmless as
    # sent.
    assert "GET /api/v1/customers?q=[redacted]&limit=5 200 " in log
    assert "GET /api/v1/pets?q=[redacted]&limit=1 200 " in log
