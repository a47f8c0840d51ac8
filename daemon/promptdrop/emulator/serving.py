"""The HTTP plumbing both origins share: the server, and a handler base that answers, loses
answers on purpose (gateway pages, resets, cut-short bodies, slow answers) and survives its
own bugs."""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from promptdrop.emulator.answers import (
    GATEWAY_PAGE,
    INTERNAL_ERROR,
    RATE_LIMITED,
    TOO_LARGE,
    UNAVAILABLE,
)
from promptdrop.emulator.faults import Faults
from promptdrop.emulator.state import EmulatorState

# Bodies beyond this are refused unread (the upload limit plus multipart overhead).
MAX_BODY_BYTES = 32 * 1024 * 1024


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the shared state and its open connections."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of new connections, which
    # then wait a second for the kernel's retry: a real API does not make a client wait so.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        state: EmulatorState,
        stopping: threading.Event,
    ) -> None:
        self.state = state
        self.stopping = stopping
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, resets) are normal here; handler bugs are
        # already answered with a 500 by the handler itself.
        pass

    def track(self, conn: socket.socket, open_: bool) -> None:
        """Remember (or forget) a client connection, so stop() can end idle keep-alives."""
        with self._conn_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut every open client connection, so no pooled connection outlives stop()."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class EmulatorServer6(EmulatorServer):
    address_family = socket.AF_INET6


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "promptdrop-emulator"
    # Headers and body go out in two writes: without this, Nagle plus delayed ACKs add 40 ms.
    disable_nagle_algorithm = True
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # No access log: tests run with pipes and -W error, and the CLI prints one line.
        pass

    @property
    def state(self) -> EmulatorState:
        return self.server.state

    def _read_body(self) -> bytes | None:
        """Read the request body; None (after answering 413) when it is too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    self._too_large_body()
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._too_large_body()
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _too_large_body(self) -> None:
        self.close_connection = True
        self._json(413, {"success": False, "message": TOO_LARGE})

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        record: bool = True,
        head_only: bool = False,
    ) -> None:
        if record:
            self.state.record_status(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _json(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        *,
        record: bool = True,
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, body, "application/json", headers, record=record)

    def _retry_after(self, seconds: int, faults: Faults) -> str:
        if faults.retry_after_format == "date":
            return email.utils.formatdate(time.time() + seconds, usegmt=True)
        return str(seconds)

    def _reset(self) -> None:
        """Drop the connection with an RST and no answer."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference to the socket: the fd (and the RST) goes only when both close.
        self.rfile.close()
        sock.close()

    def _gateway(self, fault: str) -> None:
        code, reason = (502, "Bad Gateway") if fault == "html_502" else (504, "Gateway Time-out")
        page = GATEWAY_PAGE.format(code=code, reason=reason).encode("ascii")
        self._send(code, page, "text/html")

    def _pre_fault(
        self,
        fault: str | None,
        faults: Faults,
        headers: dict[str, str],
        *,
        limited: Any = RATE_LIMITED,
        unavailable: Any = UNAVAILABLE,
    ) -> bool:
        """Answer an error that comes before processing; True when it was answered.
        `limited` and `unavailable` are the bodies of a 429 and a 503 for this request."""
        if fault == "rate_429":
            headers = {**headers, "Retry-After": self._retry_after(1, faults)}
            self._json(429, limited, headers)
        elif fault == "error_500":
            self._json(500, INTERNAL_ERROR)
        elif fault == "error_503":
            self._json(503, unavailable)
        else:
            return False
        return True

    def _deliver(
        self,
        fault: str | None,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        head_only: bool = False,
    ) -> None:
        """Send an answer, or lose it as the post-processing fault says."""
        if fault in ("html_502", "html_504"):
            self._gateway(fault)
        elif fault == "reset":
            self._reset()
        elif fault == "malformed_json":
            # Cut short: a JSON answer that does not parse, or a truncated file.
            self._send(status, body[: max(1, len(body) // 2)], content_type, headers)
        else:
            if fault == "slow":
                self.server.stopping.wait(self.state.faults.slow_seconds)
            self._send(status, body, content_type, headers, head_only=head_only)

    def _guarded(self, work: Any) -> None:
        try:
            work()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug in the emulator: still answer, visibly
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._json(
                    500,
                    {
                        "error": {
                            "code": "internal_error",
                            "message": f"emulator error: {type(exc).__name__}: {exc}",
                        }
                    },
                )
