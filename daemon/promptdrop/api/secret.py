"""The API key: a `Secret` that cannot show itself by accident, and the auth that sends it
only to the API's own origin."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx

from promptdrop.api.errors import ApiError

REDACTED = "[redacted]"
DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int | None]


class Secret:
    """A string that never shows itself: repr() and str() are masked; use .reveal() to send it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of the secret replaced by a marker."""
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled or copied to storage")


def origin_of(url: httpx.URL) -> Origin:
    """(scheme, host, port) of a URL, with the default port filled in."""
    return (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme))


class BearerAuth(httpx.Auth):
    """Adds the key, and refuses outright to add it for any origin but the API's."""

    def __init__(self, key: Secret, origin: Origin) -> None:
        self._key = key
        self._origin = origin

    def __repr__(self) -> str:
        return "BearerAuth(********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if origin_of(request.url) != self._origin:
            raise ApiError(
                f"Refusing to send the API key to {request.url.scheme}://{request.url.host}: "
                "it only goes to the configured API address."
            )
        request.headers["Authorization"] = "Bearer " + self._key.reveal()
        yield request
