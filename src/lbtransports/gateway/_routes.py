"""Which endpoint a request is for, who may call it, and the answers that need no backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from lbtransports._async import AsyncClient

from ._answer import answer, new_request_id
from ._anthropic_format import AnthropicFormat
from ._auth import KeyRing, presented_key
from ._caller import CallerFormat, InvalidRequest
from ._http import Connection, Request
from ._metrics import CONTENT_TYPE, Latencies, render_metrics
from ._openai_format import OpenAIFormat

__all__ = ("Router", "caller_for_path")

_JSON: Final = (("content-type", "application/json"),)
_CHAT: Final[dict[str, CallerFormat]] = {
    "/v1/chat/completions": OpenAIFormat(),
    "/v1/messages": AnthropicFormat(),
}
_GETS: Final = frozenset({"/healthz", "/metrics", "/v1/models"})


def caller_for_path(path: str) -> CallerFormat:
    """The format errors on ``path`` are written in: Anthropic's for its endpoint, else OpenAI's."""
    return _CHAT.get(path.partition("?")[0], _CHAT["/v1/chat/completions"])


async def send_error(
    conn: Connection,
    path: str,
    status: int,
    message: str,
    *,
    request_id: str = "",
    close: bool = False,
    allow: str = "",
) -> None:
    headers = [*_JSON, ("x-request-id", request_id or new_request_id())]
    if status == 401:
        headers.append(("www-authenticate", "Bearer"))
    if allow:
        headers.append(("allow", allow))  # a 405 must say what is allowed (RFC 9110 15.5.6)
    await conn.respond(
        status, caller_for_path(path).error_body(status, message), headers, close=close
    )


class Router:
    """Answers one request on a connection; says whether the connection may go on."""

    def __init__(
        self,
        clients: Mapping[str, AsyncClient],
        keys: KeyRing,
        latencies: Latencies,
        connections: Callable[[], int],
    ) -> None:
        self._clients = clients
        self._keys = keys
        self._latencies = latencies
        self._connections = connections

    async def handle(self, conn: Connection, request: Request) -> bool:
        path = request.path.partition("?")[0]
        caller = _CHAT.get(path)
        rid = new_request_id()
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            await conn.respond(200, b'{"status":"ok"}', [*_JSON, ("x-request-id", rid)])
            return True
        if caller is None and path not in _GETS:
            await send_error(
                conn, path, 404, f"no such endpoint: {request.method} {path[:100]}", request_id=rid
            )
            return True
        wanted = "POST" if caller is not None else "GET"
        if request.method != wanted:
            await send_error(
                conn, path, 405, f"{path} takes {wanted} only", request_id=rid, allow=wanted
            )
            return True
        # Checked before the body is even decoded: an unknown caller reaches no backend.
        if not self._keys.allows(presented_key(request.headers)):
            await send_error(
                conn,
                path,
                401,
                "missing or invalid gateway key (Authorization: Bearer or x-api-key)",
                request_id=rid,
            )
            return True
        if caller is None:
            return await self._get(conn, path, rid)
        try:
            parsed = caller.parse(request.body)
        except InvalidRequest as error:
            await send_error(conn, path, 400, str(error), request_id=rid)
            return True
        client = self._clients.get(parsed.model)
        if client is None:
            known = ", ".join(sorted(self._clients))
            await send_error(
                conn,
                path,
                404,
                f"the model {parsed.model[:100]!r} does not exist (this gateway serves: {known})",
                request_id=rid,
            )
            return True
        return await answer(
            conn,
            client,
            caller,
            parsed,
            group=parsed.model,
            request_id=rid,
            latencies=self._latencies,
        )

    async def _get(self, conn: Connection, path: str, rid: str) -> bool:
        if path == "/metrics":
            stats = {name: client.stats() for name, client in self._clients.items()}
            body = render_metrics(stats, self._latencies, self._connections())
            await conn.respond(200, body, [("content-type", CONTENT_TYPE), ("x-request-id", rid)])
            return True
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "lbcore"}
            for name in self._clients
        ]
        body = msgspec.json.encode({"object": "list", "data": models})
        await conn.respond(200, body, [*_JSON, ("x-request-id", rid)])
        return True
