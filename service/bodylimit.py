"""The request size limit (`max_body_bytes`), answered as problem+json.

A declared `Content-Length` over the limit is refused before anything is
read. A body without one (chunked) is counted as it arrives, and reading past
the limit raises a 413 `HTTPException` inside the route's body parsing, which
`errors._http` renders like every other error. (FastAPI's own `max_body_size`
answers the first case with a text/plain 413, so it is not used.)
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import MEDIA_TYPE

DRAIN_FACTOR = 16


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, int(declared))
            await self._refuse(scope, send, f"the request body is {declared} bytes")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"the request body is over {self.max_bytes} bytes, the most this service accepts")
            return message

        await self.app(scope, counted, send)

    async def _drain(self, receive: Receive, declared: int) -> None:
        """Read (and drop) a body of up to DRAIN_FACTOR times the limit before
        answering: closing a socket with unread data resets it, and the client
        would see a connection error instead of the 413. Bigger ones are cut off."""
        if declared > DRAIN_FACTOR * self.max_bytes:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"{what}; this service accepts at most {self.max_bytes}",
                "instance": scope.get("path", ""),
            }
        ).encode()
        headers = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
