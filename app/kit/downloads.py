"""File downloads whose range errors are problem+json like every other error.

Starlette's ``FileResponse`` serves ``Range`` requests itself and answers a malformed range
(400) or one beyond the file (416) in text/plain. This checks the range first, with the same
parser, and answers those two in the API's own shape; everything else is Starlette's.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.kit.files import content_disposition
from app.kit.headers import DOWNLOAD_POLICY
from app.kit.problems import BadRequest, Problem, problem_asgi


class RangeRefused(BadRequest):
    slug, title = "range-not-valid", "Range not valid"


class RangeBeyondFile(Problem):
    status, slug, title = 416, "range-not-satisfiable", "Range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(
            f"The range starts beyond the file ({size} bytes).",
            headers={"Content-Range": f"bytes */{size}"},
        )


class Download(FileResponse):
    """A ``FileResponse`` of a file whose size is known when it is made (``stat_result``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._range_refusal(scope)
        if refusal is None:
            await super().__call__(scope, receive, send)
            return
        await problem_asgi(refusal)(scope, receive, send)
        if self.background is not None:
            await self.background()

    def _range_refusal(self, scope: Scope) -> Problem | None:
        headers = Headers(scope=scope)
        asked, if_range = headers.get("range"), headers.get("if-range")
        if (
            self.stat_result is None
            or self.status_code != 200
            or asked is None
            or scope["method"].upper() not in ("GET", "HEAD")
            or (if_range is not None and not self._should_use_range(if_range))
        ):
            return None  # served whole, as Starlette would
        try:
            self._parse_range_header(asked, self.stat_result.st_size)
        except MalformedRangeHeader as exc:
            return RangeRefused(f"{exc.content} (send e.g. Range: bytes=0-1023).")
        except RangeNotSatisfiable as exc:
            return RangeBeyondFile(exc.max_size)
        return None


class WholeDownload(FileResponse):
    """A file served whole whatever ``Range`` asks, saying so (``Accept-Ranges: none``): for
    what is served once, where a part would use it up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers["accept-ranges"] = "none"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        whole = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        await super().__call__({**scope, "headers": whole}, receive, send)


def download_headers(filename: str, sha256_hex: str | None = None) -> dict[str, str]:
    """The headers of every file the API answers with (an attachment, an export): a download
    under ``filename``, never sniffed nor kept by a cache, sandboxed if a browser opens it anyway
    (a polyglot's HTML side runs no script), and with its SHA-256 when known."""
    headers = {
        "Content-Disposition": content_disposition(filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": DOWNLOAD_POLICY,
        "Cache-Control": "no-store",
    }
    if sha256_hex is not None:
        headers["Repr-Digest"] = repr_digest(sha256_hex)
    return headers


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530's ``Repr-Digest`` of a file whose SHA-256 is known: the client can check what
    it received."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"
