"""The document the service publishes at /openapi.json is the one committed in docs/openapi.json.

Any change to the API shows up as a diff of docs/openapi.json in review; regenerate it with
``python -m tests.contract.snapshot``.
"""

from __future__ import annotations

import difflib

from tests.contract.snapshot import REGENERATE, SNAPSHOT, render

MAX_DIFF_LINES = 60


def _diff(expected: str, actual: str) -> str:
    lines = list(
        difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            fromfile="docs/openapi.json (committed)",
            tofile="/openapi.json (served)",
            lineterm="",
        )
    )
    shown = "\n".join(lines[:MAX_DIFF_LINES])
    more = len(lines) - MAX_DIFF_LINES
    return shown + (f"\n... {more} more diff lines" if more > 0 else "")


async def test_served_document_equals_the_committed_snapshot(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")

    served = render(response.json())
    committed = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""

    assert served == committed, (
        f"docs/openapi.json is not the document the service serves. If the API change is "
        f"intended, regenerate it with `{REGENERATE}` and commit the result.\n"
        + _diff(committed, served)
    )
