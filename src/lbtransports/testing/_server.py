"""Serving one backend: accept connections, then read, record and answer each request.

A client doing anything at any moment (closing, resetting, sending garbage)
ends only its own connection. An unexpected exception is kept in
``LocalBackend.errors`` rather than raised, so it cannot stop the other
connections or backends either. Cancellation (the server stopping) passes
through everything and closes every connection at once.
"""

from __future__ import annotations

import anyio
import anyio.abc
import h11
import msgspec

from ._backend import LocalBackend
from ._formats import Reply
from ._http import ClientGone, Ending, IncomingRequest, ServerConnection
from ._play import Exchange, play, play_no_route
from ._received import Received

__all__ = ("serve_backend",)

#: The header naming which backend answered, for tests that follow a request around.
BACKEND_HEADER = "x-local-backend"


async def serve_backend(
    backend: LocalBackend, listener: anyio.abc.Listener[anyio.abc.ByteStream]
) -> None:
    """Serve ``backend`` on ``listener`` until cancelled."""

    async def handle(stream: anyio.abc.ByteStream) -> None:
        await _connection(backend, stream)

    async with anyio.create_task_group() as connections:
        await listener.serve(handle, task_group=connections)


async def _connection(backend: LocalBackend, stream: anyio.abc.ByteStream) -> None:
    backend._connection_opened()
    connection = ServerConnection(stream)
    ending = Ending.CLOSE
    try:
        ending = await _converse(backend, connection)
    except ClientGone:
        pass
    except Exception as error:
        backend._note_error(error)
    finally:
        try:
            await connection.close(ending)
        finally:
            backend._connection_closed()


async def _converse(backend: LocalBackend, connection: ServerConnection) -> Ending:
    """Answer requests until the client leaves or an answer ends the connection."""
    while True:
        try:
            request = await connection.read_request()
        except h11.RemoteProtocolError as error:
            await connection.refuse(error.error_status_hint)
            return Ending.CLOSE
        if request is None:
            return Ending.CLOSE

        async def answer(request: IncomingRequest = request) -> Ending:
            return await _answer(backend, connection, request)

        ending = await connection.while_connected(answer)
        if ending is None:  # the client left mid-answer
            return Ending.CLOSE
        if ending is not Ending.KEEP or not connection.next_cycle():
            return ending


async def _answer(
    backend: LocalBackend, connection: ServerConnection, request: IncomingRequest
) -> Ending:
    number = backend._next_request()
    wire = backend._wire_format
    try:
        body: object = msgspec.json.decode(request.body)
    except msgspec.DecodeError:
        body = None
    route = wire.route(request.method, request.path, body)
    behaviour = backend._next_behaviour() if route is not None else None
    backend._record(
        Received(
            backend=backend.name,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=request.body,
            model=route.model if route is not None else None,
            stream=route.stream if route is not None else False,
            behaviour=behaviour,
        )
    )
    model = route.model if route is not None and route.model else "local-model"
    exchange = Exchange(
        connection=connection,
        format=wire,
        reply=Reply(backend=backend.name, model=model, number=number),
        stream=route.stream if route is not None else False,
        headers=((BACKEND_HEADER, backend.name),),
    )
    if behaviour is None:
        return await play_no_route(exchange, request.method, request.path)
    return await play(behaviour, exchange)
