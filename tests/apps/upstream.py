"""A plain ASGI upstream for the load tests (no OpenTelemetry): ``POST /echo/{n}`` answers ``{"echo": n}``."""

import json


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    n = scope["path"].rsplit("/", 1)[-1]
    body = json.dumps({"echo": n}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
