"""ASGI middleware (request body size limit) and the security headers of HTML pages."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimitMiddleware:
    """Answer 413 when a request body is larger than ``max_bytes``.

    Checks ``Content-Length`` up front and counts streamed bytes too, so a
    chunked upload cannot slip past the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, refusing a body over ``max_bytes`` with 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        too_big = False

        async def counting_receive() -> Message:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"request body larger than {self.max_bytes} bytes",
                "error": "PayloadTooLarge",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """Raised inside receive() when the streamed body passes the limit."""


def security_headers(embed: bool, img_hosts: str = "") -> dict[str, str]:
    """CSP and friends: embeds may be framed anywhere, other pages nowhere."""
    csp = (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{img_hosts}; connect-src 'self'; font-src 'self'; "
        "object-src 'none'; "
        "base-uri 'self'; form-action 'self'; "
    )
    headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
    if embed:
        headers["Content-Security-Policy"] = csp + "frame-ancestors *"
    else:
        headers["Content-Security-Policy"] = csp + "frame-ancestors 'none'"
        headers["X-Frame-Options"] = "DENY"
    return headers
