"""The two HTTP origins: the API (with its /_emulator/* control endpoints) and the files host."""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import json
import re
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from promptdrop import imaging
from promptdrop.emulator.faults import Faults
from promptdrop.emulator.images import render
from promptdrop.emulator.multipart import MultipartError, parse_form_data
from promptdrop.emulator.ratelimit import Decision
from promptdrop.emulator.state import EmulatorState
from promptdrop.emulator.validate import InvalidRequest, parse_submit

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Bodies beyond this are refused unread (the upload limit plus multipart overhead).
MAX_BODY_BYTES = 32 * 1024 * 1024

AUTH_FAILED = {
    "error": {
        "code": 401,
        "message": "Authentication failed, please check your API key",
        "type": "authentication_error",
    }
}
RATE_LIMITED = {
    "error": {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"}
}
INTERNAL_ERROR = {
    "error": {"code": "internal_error", "message": "Internal server error", "type": "server_error"}
}
UNAVAILABLE = {
    "error": {
        "code": "rate_limit_unavailable",
        "message": "Service temporarily unavailable, please try again later",
        "type": "server_error",
    }
}
NO_QUOTA = {
    "error": {
        "code": "insufficient_quota",
        "message": "Insufficient account balance, please top up your account",
        "type": "insufficient_quota",
    }
}
NOT_FOUND_SHAPES: tuple[dict[str, Any], ...] = (
    {"message": "task_not_exist"},
    {
        "error": {
            "code": "task_not_found",
            "message": "Task not found",
            "type": "invalid_request_error",
        }
    },
)
GATEWAY_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
TOO_LARGE = "Image too large. Maximum size is 10MB"
UNSUPPORTED = "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"

_TASK_PATH = re.compile(r"^/v1/images/generations/([^/]+)$")
# API route -> (fault endpoint kind, rate-limit bucket)
_ROUTES = {
    "submit": ("submit", "submit"),
    "upload": ("upload", "submit"),
    "poll": ("poll", "query"),
    "balance": ("poll", "query"),
}


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the shared state and its open connections."""

    daemon_threads = True

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


class _BaseHandler(BaseHTTPRequestHandler):
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

    def _pre_fault(self, fault: str | None, faults: Faults, headers: dict[str, str]) -> bool:
        """Answer an error that comes before processing; True when it was answered."""
        if fault == "rate_429":
            headers = {**headers, "Retry-After": self._retry_after(1, faults)}
            self._json(429, RATE_LIMITED, headers)
        elif fault == "error_500":
            self._json(500, INTERNAL_ERROR)
        elif fault == "error_503":
            self._json(503, UNAVAILABLE)
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


class ApiHandler(_BaseHandler):
    """POST/GET on the API origin."""

    def do_GET(self) -> None:
        self._guarded(lambda: self._dispatch("GET"))

    def do_POST(self) -> None:
        self._guarded(lambda: self._dispatch("POST"))

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        if path.startswith("/_emulator/"):
            self._control(method, path, body)
            return
        route, arg = _route(method, path)
        if route is None:
            self._json(404, {"error": {"code": "not_found", "message": f"No route for {path}"}})
        elif route == "method":
            self._json(
                405, {"error": {"code": "method_not_allowed", "message": "Method not allowed"}}
            )
        else:
            self._api(route, arg, body)

    def _authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        key = self.state.config.api_key
        return key is None or hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))

    def _api(self, route: str, arg: str, body: bytes) -> None:
        state = self.state
        kind, bucket = _ROUTES[route]
        if route == "submit":
            state.count("submit_requests")
        elif route == "poll":
            state.count("polls")
        faults = state.faults
        if faults.outage:
            state.record_fault("outage")
            self._json(503, UNAVAILABLE)
            return
        if faults.auth_fail:
            state.record_fault("auth_fail")
            self._json(401, AUTH_FAILED)
            return
        if not self._authorized():
            self._json(401, AUTH_FAILED)
            return
        fault = state.draw_fault(kind)
        # An injected 429 is a refusal too, so it comes before the allowance is counted.
        if fault == "rate_429":
            self._pre_fault(fault, faults, {"X-RateLimit-Category": bucket})
            return
        decision = state.rate_check(bucket)
        headers = _rate_headers(decision, bucket)
        if decision is not None and not decision.allowed:
            headers["Retry-After"] = self._retry_after(decision.retry_after, faults)
            self._json(429, RATE_LIMITED, headers)
            return
        if self._pre_fault(fault, faults, headers):
            return
        if route == "submit" and faults.quota_exhausted:
            state.record_fault("quota_exhausted")
            self._json(402, NO_QUOTA, headers)
            return
        if route == "submit":
            status, payload = self._submit(body)
        elif route == "poll":
            status, payload = self._poll(arg)
        elif route == "upload":
            status, payload = self._upload(body)
        else:
            status, payload = (
                200,
                {"object": "balance", "balance": state.balance(), "currency": "USD"},
            )
        data = json.dumps(payload).encode("utf-8")
        self._deliver(fault, status, data, "application/json", headers)

    def _submit(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = parse_submit(body)
            self.state.check_image_urls(request.image_urls)
        except InvalidRequest as exc:
            return 400, exc.body()
        return 200, self.state.create_task(request)

    def _poll(self, task_id: str) -> tuple[int, dict[str, Any]]:
        view = self.state.task_view(task_id)
        if view is None:
            return 404, NOT_FOUND_SHAPES[self.state.next_not_found_shape()]
        return 200, view

    def _upload(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            parts = parse_form_data(self.headers.get("Content-Type"), body)
        except MultipartError as exc:
            return 400, {"success": False, "message": f"Invalid upload: {exc}"}
        files = [p for p in parts if p.name == "file"]
        if not files:
            return 400, {"success": False, "message": "No file uploaded (form field 'file')"}
        data = files[0].data
        if len(data) > MAX_UPLOAD_BYTES:
            return 400, {"success": False, "message": TOO_LARGE}
        try:
            info = imaging.inspect(data)
        except imaging.ImageError:
            return 400, {"success": False, "message": UNSUPPORTED}
        if info.format not in imaging.UPLOAD_FORMATS:
            return 400, {"success": False, "message": UNSUPPORTED}
        return 200, {
            "success": True,
            "message": "",
            "data": self.state.add_upload(data, info.format),
        }

    def _control(self, method: str, path: str, body: bytes) -> None:
        state = self.state
        if method == "GET" and path == "/_emulator/stats":
            self._json(200, state.stats(), record=False)
        elif method == "GET" and path == "/_emulator/faults":
            self._json(200, state.faults.to_dict(), record=False)
        elif method == "POST" and path == "/_emulator/faults":
            try:
                data = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(data, dict):
                    raise ValueError("the body must be a JSON object of Faults fields")
                faults = Faults.from_dict(data)
            except (ValueError, TypeError) as exc:
                error = {"code": "invalid_request", "message": str(exc)}
                self._json(400, {"error": error}, record=False)
                return
            state.set_faults(faults)
            self._json(200, faults.to_dict(), record=False)
        elif method == "POST" and path == "/_emulator/reset":
            state.reset()
            self._json(200, {"reset": True}, record=False)
        else:
            error = {"code": "not_found", "message": f"No route for {method} {path}"}
            self._json(404, {"error": error}, record=False)


class FilesHandler(_BaseHandler):
    """GET/HEAD on the files origin: /generated/<name> and /uploads/<name>."""

    def do_GET(self) -> None:
        self._guarded(lambda: self._serve(head_only=False))

    def do_HEAD(self) -> None:
        self._guarded(lambda: self._serve(head_only=True))

    def _serve(self, *, head_only: bool) -> None:
        state = self.state
        if self._read_body() is None:
            return
        if "Authorization" in self.headers:
            # The API key must never travel to the files host: tests assert this stays 0.
            state.count("files_requests_with_authorization")
        path = urlsplit(self.path).path
        folder, _, name = path.lstrip("/").partition("/")
        if folder not in ("generated", "uploads") or not name or "/" in name:
            self._not_found()
            return
        if folder == "generated":
            state.count("downloads")
        fault = state.draw_fault("download")
        if self._pre_fault(fault, state.faults, {}):
            return
        if folder == "generated":
            result = state.result_file(name)
            if result is None:
                self._not_found()
                return
            data = render(result.prompt, result.size, result.fmt)
            # Served by extension, as a static file host does: always image/jpeg.
            self._deliver(fault, 200, data, "image/jpeg", head_only=head_only)
        else:
            upload = state.upload_file(name)
            if upload is None:
                self._not_found()
                return
            mime = imaging.MIME_TYPES[upload.fmt]
            self._deliver(fault, 200, upload.data, mime, head_only=head_only)

    def _not_found(self) -> None:
        self._json(404, {"error": {"code": "not_found", "message": "File not found or expired"}})


def _route(method: str, path: str) -> tuple[str | None, str]:
    """Map a request to an API route name ("method" when only the method is wrong)."""
    if path == "/v1/images/generations":
        return ("submit" if method == "POST" else "method"), ""
    if path == "/v1/uploads/images":
        return ("upload" if method == "POST" else "method"), ""
    if path == "/v1/balance":
        return ("balance" if method == "GET" else "method"), ""
    match = _TASK_PATH.match(path)
    if match:
        return ("poll" if method == "GET" else "method"), match.group(1)
    return None, ""


def _rate_headers(decision: Decision | None, bucket: str) -> dict[str, str]:
    if decision is None:
        return {}
    return {
        "X-RateLimit-Limit": f"{decision.limit:g}",
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset),
        "X-RateLimit-Category": bucket,
    }
