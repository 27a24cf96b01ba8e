"""How `vetify serve` runs uvicorn: bounds on what a client can make the server hold.

uvicorn's default HTTP parser (httptools) buffers a request head of any size until it ends;
h11 stops once an unfinished head passes ``h11_max_incomplete_event_size``. That bound sits
just above the app's own (app/kit/heads.py: 414, 431), so every head the app would take gets
through, and the app answers those between the two. A head over it is refused here as the app
would refuse it, 431 problem+json, and the connection closed. (A head that arrives whole in a
single read is parsed whatever its size, and the app refuses it; one read is at most the event
loop's buffer, about 256 KB.)

Bodies are bounded in time by app/kit/bodies.py. A head that trickles in is not bounded here:
the reverse proxy in front times it out (docs/security.md).
"""

from __future__ import annotations

import sys
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.kit.logs import uvicorn_log_config
from app.kit.problems import CLOSE, MEDIA_TYPE, BadRequest, HeadersTooLarge, Problem
from app.settings import Settings

KEEP_ALIVE_SECONDS = 5
"""An idle connection between requests is closed after this (uvicorn's default, stated): the
proxy's own keep-alive towards the service must be shorter, or it may reuse a closing one."""
HEAD_OVERHEAD = 1024
"""Bytes of a request head outside the URL and the headers the app counts: the method, the
version, line ends, room for header folding."""


def options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``."""
    return {
        "http": BoundedH11Protocol,
        "h11_max_incomplete_event_size": head_limit(settings),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        # Its access log without the personal data of query strings (app/kit/logs.py).
        "log_config": uvicorn_log_config(),
    }


def head_limit(settings: Settings) -> int:
    return settings.max_url_bytes + settings.max_header_bytes + HEAD_OVERHEAD


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, refusing a request it cannot parse in the API's error shape."""

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this (only) while handling h11's RemoteProtocolError, which says the
        # status: 431 for a head over the bound, 400 for one that is not HTTP/1.1.
        if getattr(sys.exc_info()[1], "error_status_hint", 400) == 431:
            limit = self.config.h11_max_incomplete_event_size
            problem: Problem = HeadersTooLarge(
                f"The request line and headers may be at most {limit} bytes."
            )
        else:
            problem = BadRequest("The request is not valid HTTP/1.1.")
        body = problem.body().model_dump_json(exclude_none=True).encode()
        headers = [
            ("content-type", MEDIA_TYPE),
            ("content-length", str(len(body))),
            *CLOSE.items(),
        ]
        reason = HTTPStatus(problem.status).phrase
        response = h11.Response(status_code=problem.status, headers=headers, reason=reason)
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
