"""uvicorn's HTTP/1.1 protocol (h11) with the deadlines it lacks, used by `convzoo serve`.

uvicorn times out idle keep-alive connections, but not a client that is slow inside a request:
a connection that sends nothing, headers that arrive a byte at a time, or a body trickled one
byte every few seconds each hold a connection slot for as long as the client likes, and a few
of them fill `--max-connections` (every other request then gets 503). Here:

- the request head (request line and headers) must arrive within `header_timeout` seconds of
  the connection opening, or of the first byte of the next request on a keep-alive connection;
  otherwise 408 and the connection is closed (a connection that sent nothing is just closed);
- the body must be complete within `body_timeout` seconds of the head. The application answers
  408 itself when it is the one reading (`app.Guard`); this is the backstop for bodies nobody
  reads and for an application stuck in something else: the connection is closed;
- on shutdown (SIGTERM), an idle keep-alive connection is not closed at once: a request already
  on its way (possibly in the socket buffer, where closing would make the kernel reset the
  connection) gets answered with `Connection: close` during `drain_grace` seconds. Requests in
  progress finish as uvicorn does anyway (answered, then closed).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMEOUT_BODY = b'{"error": "request timeout: the request head did not arrive in time"}'


def guarded_protocol(header_timeout: float, body_timeout: float, drain_grace: float = 1.0) -> type:
    """An `H11Protocol` class with these deadlines, for `uvicorn.Config(http=...)`."""

    class Guarded(GuardedH11Protocol):
        pass

    Guarded.header_timeout = header_timeout
    Guarded.body_timeout = body_timeout
    Guarded.drain_grace = drain_grace
    return Guarded


class GuardedH11Protocol(H11Protocol):
    header_timeout = 10.0
    body_timeout = 60.0
    drain_grace = 1.0
    body_grace = 2.0  # the application's 408 comes first when it is reading the body

    def connection_made(self, transport) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = ""
        self._draining = False
        super().connection_made(transport)
        self._arm("head", self.header_timeout)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state(idle_is_head=False)  # uvicorn's keep-alive timer covers an idle connection

    def handle_events(self) -> None:
        super().handle_events()
        if self._draining and self.cycle is not None and not self.cycle.response_started:
            self.cycle.keep_alive = False  # answered, then closed, and the client is told so
            if (b"connection", b"close") not in self.cycle.default_headers:
                self.cycle.default_headers = [*self.cycle.default_headers, (b"connection", b"close")]

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            # idle: leave the door open briefly for a request already sent, then close
            self._draining = True
            self.loop.call_later(self.drain_grace, self._close_if_idle)
        else:
            super().shutdown()

    # ---- deadlines -------------------------------------------------------------------------------
    def _follow_state(self, idle_is_head: bool = True) -> None:
        """Arm the deadline that fits where the client is in its request."""
        if self.transport is None or self.transport.is_closing():
            return
        theirs = self.conn.their_state
        if theirs is h11.SEND_BODY:
            if self._waiting_for != "body":
                self._arm("body", self.body_timeout + self.body_grace)
        elif theirs is h11.IDLE and idle_is_head and self.conn.our_state is h11.IDLE:
            if self._waiting_for != "head":
                self._arm("head", self.header_timeout)
        else:
            self._disarm()

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = what
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, ""

    def _expired(self, what: str) -> None:
        self._deadline, self._waiting_for = None, ""
        if self.transport.is_closing():
            return
        if what == "head":
            if self.conn.their_state is not h11.IDLE or self.conn.our_state is not h11.IDLE:
                return  # the head arrived meanwhile
            if self.conn.trailing_data[0]:  # part of a head arrived: say why it is closed
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(TIMEOUT_BODY), TIMEOUT_BODY)
                )
            self.logger.warning("closing a connection whose request head took over %s s", self.header_timeout)
        else:
            if self.conn.their_state is not h11.SEND_BODY:
                return
            self.logger.warning("closing a connection whose request body took over %s s", self.body_timeout)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        self.transport.close()

    def _close_if_idle(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
                super().shutdown()  # uvicorn's close of an idle connection
                return
        if self.cycle is not None:
            self.cycle.keep_alive = False
