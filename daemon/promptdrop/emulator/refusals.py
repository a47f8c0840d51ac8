"""The one refusal a generation request can meet before a task exists: 400 invalid_request."""

from __future__ import annotations

from typing import Any


class InvalidRequest(Exception):
    """A request the API answers with 400 invalid_request."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The documented error body for this refusal."""
        error: dict[str, Any] = {
            "code": "invalid_request",
            "message": self.message,
            "type": "invalid_request_error",
        }
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}
