"""A real HTTP receiver on loopback for webhook deliveries: it records every request and
answers as a test scripts it (a status per request, Retry-After, a hang)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Script:
    """How one path answers: statuses in turn (the last one repeats), extra headers, and a
    number of seconds to sit on each request before answering."""

    statuses: list[int] = field(default_factory=lambda: [200])
    headers: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0


class Receiver:
    def __init__(self):
        self.requests: list[Received] = []
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        received = Received(
            handler.path, {k.lower(): v for k, v in handler.headers.items()}, body, time.time()
        )
        with self._lock:
            self.requests.append(received)
            script = self.scripts.setdefault(handler.path, Script())
            status = script.statuses.pop(0) if len(script.statuses) > 1 else script.statuses[0]
        if script.hang_seconds:
            time.sleep(script.hang_seconds)
        handler.send_response(status)
        for name, value in script.headers.items():
            handler.send_header(name, value)
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def do_POST(self):  # noqa: N802 - the stdlib's name
            receiver._answer(self)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver._server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
