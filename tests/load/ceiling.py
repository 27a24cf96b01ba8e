"""The benchmark's ceiling (tests/load/bench.py): a bare FastAPI app answering the pets list's
JSON from memory, under the same uvicorn as `vetify serve`. What one Python process can answer
with none of the service's work: no database, no authentication, no middleware."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

PAYLOAD: Any = json.loads(Path(os.environ["VETIFY_CEILING_BODY"]).read_bytes())

app = FastAPI()


@app.get("/api/v1/pets")
async def pets() -> Any:
    return PAYLOAD
