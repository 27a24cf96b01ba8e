"""The body deadline (app/kit/bodies.py) bounds the body only: once it is in, a route may wait
for the client to go away (a long answer listening for a disconnect) for as long as that
takes. The deadline itself: tests/security/test_request_limits.py, and over a socket
tests/integration/test_server_limits.py."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from app.kit.bodies import BodyLimits

DEADLINE = 0.1


async def test_waiting_for_a_disconnect_after_the_body_is_not_timed() -> None:
    arriving: list[Message] = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if arriving:
            return arriving.pop(0)
        await asyncio.sleep(DEADLINE * 3)  # the client leaves after the deadline
        return {"type": "http.disconnect"}

    heard: list[Message] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        heard.append(await receive())
        heard.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    limits = BodyLimits(route, max_bytes=1024, max_json_depth=8, read_timeout=DEADLINE)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", b"application/json")],
    }
    await limits(scope, receive, send)

    assert [message["type"] for message in heard] == ["http.request", "http.disconnect"]
    assert sent[0]["status"] == 204
