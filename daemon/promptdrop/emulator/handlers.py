"""The two origins' request handlers: the API (with its /_emulator/* control endpoints)
and the files host."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any
from urllib.parse import urlsplit

from promptdrop import imaging
from promptdrop.emulator.answers import (
    AUTH_FAILED,
    NO_QUOTA,
    RATE_LIMITED,
    SUBMIT_LIMITER_DOWN,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    UNKNOWN_TASK_ANSWERS,
    UNKNOWN_TASK_BY_MODE,
    UNSUPPORTED,
)
from promptdrop.emulator.faults import Faults
from promptdrop.emulator.images import render, render_pixels
from promptdrop.emulator.multipart import MultipartError, parse_form_data
from promptdrop.emulator.ratelimit import Decision
from promptdrop.emulator.serving import BaseHandler
from promptdrop.emulator.validate import InvalidRequest, parse_submit

# "10MB" on the upload page: the emulator takes the generous reading (10 MiB) as a server
# might; promptdrop itself refuses a reference above 10,000,000 bytes before it gets here.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_MIME_BY_EXTENSION = {
    ext.lstrip("."): imaging.MIME_TYPES[fmt] for fmt, ext in imaging.EXTENSIONS.items()
}

_TASK_PATH = re.compile(r"^/v1/images/generations/([^/]+)$")
# API route -> (fault endpoint kind, rate-limit bucket). Uploads and the balance are in
# neither async bucket (toapis-models.md §5): not counted, and their 429s are not labelled.
_ROUTES: dict[str, tuple[str, str | None]] = {
    "submit": ("submit", "submit"),
    "upload": ("upload", None),
    "poll": ("poll", "query"),
    "balance": ("poll", None),
    "user_balance": ("poll", None),
}
# The X-RateLimit-Category of each bucket, as the docs name them.
CATEGORIES = {"submit": "async_submit", "query": "async_query"}
_BALANCE_PATHS = {
    "/v1/balance": "balance",
    "/balance": "balance",
    "/v1/user/balance": "user_balance",
    "/user/balance": "user_balance",
}


class ApiHandler(BaseHandler):
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
        if route == "submit" and faults.submit_limiter_down:
            # The limiter cannot count, so it refuses before the allowance is counted.
            state.record_fault("submit_limiter_down")
            self._json(503, SUBMIT_LIMITER_DOWN)
            return
        fault = state.draw_fault(kind)
        limited = RATE_LIMITED if bucket is not None else TOO_MANY_REQUESTS
        unavailable = SUBMIT_LIMITER_DOWN if route == "submit" else UNAVAILABLE
        # An injected 429 is a refusal too, so it comes before the allowance is counted.
        if fault == "rate_429":
            category = {"X-RateLimit-Category": CATEGORIES[bucket]} if bucket else {}
            self._pre_fault(fault, faults, category, limited=limited)
            return
        decision = state.rate_check(bucket) if bucket is not None else None
        headers = _rate_headers(decision, bucket)
        if decision is not None and not decision.allowed:
            headers["Retry-After"] = self._retry_after(decision.retry_after, faults)
            self._json(429, RATE_LIMITED, headers)
            return
        if self._pre_fault(fault, faults, headers, limited=limited, unavailable=unavailable):
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
            # Failures too are HTTP 200, with success false (toapis-models.md §4).
            status, payload = 200, state.balance("user" if route == "user_balance" else "token")
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
            mode = self.state.faults.unknown_task_answer
            if mode in UNKNOWN_TASK_BY_MODE:
                return UNKNOWN_TASK_BY_MODE[mode]
            return UNKNOWN_TASK_ANSWERS[self.state.next_unknown_task_answer()]
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


class FilesHandler(BaseHandler):
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
            if result.pixels is None:
                data = render(result.prompt, result.size, result.fmt)
            else:
                data = render_pixels(
                    result.prompt, result.pixels, result.fmt, result.quality, result.variant
                )
            # Served by extension, as a static file host does (.jpg: image/jpeg, whatever
            # the bytes are).
            mime = _MIME_BY_EXTENSION.get(name.rpartition(".")[2], "application/octet-stream")
            self._deliver(fault, 200, data, mime, head_only=head_only)
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
    if path in _BALANCE_PATHS:
        return (_BALANCE_PATHS[path] if method == "GET" else "method"), ""
    match = _TASK_PATH.match(path)
    if match:
        return ("poll" if method == "GET" else "method"), match.group(1)
    return None, ""


def _rate_headers(decision: Decision | None, bucket: str | None) -> dict[str, str]:
    if decision is None or bucket is None:
        return {}
    return {
        "X-RateLimit-Limit": f"{decision.limit:g}",
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset),
        "X-RateLimit-Category": CATEGORIES[bucket],
    }
