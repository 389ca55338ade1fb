"""The HTTP server's own defences, for `app.serve` (what `make run` and the Docker image start).

uvicorn closes idle keep-alive connections, but nothing bounds a connection that opens and then sends its
request line and headers a byte at a time, or not at all (slowloris): a thousand of them hold a thousand
sockets indefinitely. `GuardedH11Protocol` gives every request `header_timeout_s` to arrive whole, from the
connection's start or the previous response's end, then closes it. A request body that stops arriving is
bounded where it is read (app/uploads/stream.py, app/json_body.py: `body_timeout_s` between chunks)."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        # still no complete request: no response was started, so the connection is simply closed
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            if self.conn.our_state not in (h11.ERROR, h11.CLOSED, h11.MUST_CLOSE):
                try:
                    self.conn.send(h11.ConnectionClosed())
                except h11.LocalProtocolError:
                    pass
            self.transport.close()

    def handle_events(self) -> None:
        had_cycle = self.cycle
        super().handle_events()
        if self.cycle is not had_cycle and self.cycle is not None:  # a whole request's headers arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has the same time to arrive

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
