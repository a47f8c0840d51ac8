"""Client-side rate limits for the ToAPIs API, so the account's allowance is never exceeded.

ToAPIs counts two buckets per account: async submitting (generations) and async querying
(task polls). Each has a per-second rate and a burst allowance per 10 seconds, which depend on
the account group (toapis-models.md §5). Uploads and the balance are in neither bucket (their
pages show another 429 and no limits), so they are not counted here.

A 429 says which bucket it is about in `X-RateLimit-Category` (`async_submit` or
`async_query`); the client then holds that bucket, and only that one, for the wait the answer
asked for, so that the other requests of the same kind wait too instead of each hitting the
limit on its own. A 503 `rate_limit_unavailable` to a submit (the submit limiter is down;
queries still pass) holds the submit bucket the same way.

Why hand-written rather than aiolimiter: aiolimiter is a leaky bucket whose capacity is one
period's worth, so after an idle spell it lets nearly twice the rate through in the first
second (5 at once, then one every 0.2 s). A server that counts requests in sliding windows
(as our emulator does, and as the docs' "per second" / "per 10 s" wording suggests) refuses
that. A sliding window on our side is the conservative reading that satisfies both a sliding
window and a token bucket on the server, and the same dozen lines serve both time scales.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

# Waits shorter than this are scheduling noise, not worth an event.
RATE_WAIT_EVENT_THRESHOLD = 0.005


@dataclass(frozen=True)
class RateLimits:
    """Requests per second and per 10 seconds for the submit and query buckets.

    `RateLimits.unlimited()` (enabled=False) turns client-side limiting off; the client then
    relies on the server's 429 answers alone. `RateLimits.for_group("vip")` gives the documented
    limits of an account group. A fractional per-second rate allows its whole part in any one
    second (16.7 -> 16). slack_s widens each window a little, so that network jitter cannot
    make two requests spaced exactly one window apart arrive closer than that.
    """

    submit_per_s: float = 5.0
    submit_burst_10s: int = 50
    query_per_s: float = 50.0
    query_burst_10s: int = 500
    enabled: bool = True
    slack_s: float = 0.1

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        for name in ("submit_per_s", "submit_burst_10s", "query_per_s", "query_burst_10s"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value >= 1):
                raise ValueError(f"rate limit {name} must be a number of at least 1")
        if not (0 <= self.slack_s < 1):
            raise ValueError("slack_s must be from 0 to under 1 second")

    @classmethod
    def unlimited(cls) -> RateLimits:
        """Limits that never wait (client-side limiting disabled)."""
        return cls(enabled=False)

    @classmethod
    def for_group(cls, group: str) -> RateLimits:
        """The documented limits of an account group: "default", "vip" or "svip"."""
        try:
            return RATE_GROUPS[group]
        except KeyError:
            known = ", ".join(sorted(RATE_GROUPS))
            raise ValueError(f"unknown account group {group!r} (known: {known})") from None

    def with_submit_rate(self, per_s: float) -> RateLimits:
        """These limits with the submit bucket set to `per_s` submissions per second.

        The burst allowance follows the rate (ten seconds' worth, as in every documented
        group); the query bucket is unchanged. A rate under 1 per second is kept by the
        10-second window alone (0.5 -> at most 5 in any 10 s, and never 2 in one second).
        """
        if not (
            isinstance(per_s, int | float)
            and not isinstance(per_s, bool)
            and math.isfinite(per_s)
            and per_s >= 0.1
        ):
            raise ValueError("the submit rate must be a number of at least 0.1 per second")
        return replace(
            self,
            submit_per_s=max(1.0, per_s),
            submit_burst_10s=max(1, math.floor(per_s * 10 + 1e-9)),
            enabled=True,
        )

    @property
    def sustained_submit_rate(self) -> float | None:
        """Submissions per second this client keeps to over a long batch (the slack included);
        None when limiting is off."""
        if not self.enabled:
            return None
        return min(
            math.floor(self.submit_per_s) / (1 + self.slack_s),
            self.submit_burst_10s / (10 + self.slack_s),
        )


# The API endpoints counted in a bucket; the others (upload, balance, download) are in none.
ENDPOINT_BUCKETS = {"submit": "submit", "task": "query"}
# X-RateLimit-Category values, as the docs name the buckets.
CATEGORY_BUCKETS = {"async_submit": "submit", "async_query": "query"}


def slowed_bucket(
    endpoint: str, status: int, code: int | str | None, category: str | None
) -> str | None:
    """The bucket a refusal says to slow down, or None: a 429's category (the endpoint's own
    bucket when the header is missing or unknown), the submit bucket for a submit's 503
    rate_limit_unavailable. A 429 to an upload or the balance slows no async bucket."""
    if status == 429:
        named = CATEGORY_BUCKETS.get((category or "").strip().lower())
        return named or ENDPOINT_BUCKETS.get(endpoint)
    if endpoint == "submit" and code == "rate_limit_unavailable":
        return "submit"
    return None


RATE_GROUPS: dict[str, RateLimits] = {
    "default": RateLimits(5.0, 50, 50.0, 500),
    "vip": RateLimits(16.7, 167, 166.7, 1667),
    "svip": RateLimits(33.3, 334, 500.0, 5000),
}


class _Window:
    """At most `limit` requests in any `seconds`-long window."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = max(1, limit)
        self.seconds = seconds
        self.sent: deque[float] = deque()

    def wait(self, now: float) -> float:
        while self.sent and self.sent[0] <= now - self.seconds:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[-self.limit] + self.seconds - now

    def record(self, now: float) -> None:
        self.sent.append(now)
        while len(self.sent) > self.limit:
            self.sent.popleft()


class Bucket:
    """One rate-limited bucket: a per-second window and a 10-second window."""

    def __init__(
        self,
        name: str,
        per_s: float,
        burst_10s: int,
        slack_s: float = 0.0,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self._windows = (
            _Window(math.floor(per_s), 1.0 + slack_s),
            _Window(int(burst_10s), 10.0 + slack_s),
        )
        self._lock: asyncio.Lock | None = None
        self._on_wait = on_wait
        self._held_until = 0.0

    def hold(self, seconds: float, now: float | None = None) -> None:
        """Send nothing more from this bucket for `seconds` (the server asked us to wait)."""
        now = time.monotonic() if now is None else now
        self._held_until = max(self._held_until, now + max(0.0, seconds))

    async def acquire(self) -> float:
        """Wait until one more request may be sent; return how long that took (seconds)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = time.monotonic()
        # One waiter at a time, in arrival order, so checks and records cannot interleave.
        async with self._lock:
            while True:
                now = time.monotonic()
                delay = max(self._held_until - now, *(w.wait(now) for w in self._windows))
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            for window in self._windows:
                window.record(now)
        waited = time.monotonic() - started
        if waited > RATE_WAIT_EVENT_THRESHOLD and self._on_wait is not None:
            self._on_wait(self.name, waited)
        return waited


class Limits:
    """The submit and query buckets of one client (no-ops when limits are disabled)."""

    def __init__(
        self, limits: RateLimits, on_wait: Callable[[str, float], None] | None = None
    ) -> None:
        self.limits = limits
        self.submit: Bucket | None = None
        self.query: Bucket | None = None
        if limits.enabled:
            self.submit = Bucket(
                "submit", limits.submit_per_s, limits.submit_burst_10s, limits.slack_s, on_wait
            )
            self.query = Bucket(
                "query", limits.query_per_s, limits.query_burst_10s, limits.slack_s, on_wait
            )

    def _bucket(self, bucket: str | None) -> Bucket | None:
        return {"submit": self.submit, "query": self.query}.get(bucket or "")

    async def acquire(self, bucket: str | None) -> None:
        """Wait for a slot in the named bucket ("submit" or "query"; None: in no bucket)."""
        chosen = self._bucket(bucket)
        if chosen is not None:
            await chosen.acquire()

    def hold(self, bucket: str | None, seconds: float) -> None:
        """Hold one bucket for `seconds` after the server refused a request of its kind
        (nothing when limits are disabled: then only the refused request itself waits)."""
        chosen = self._bucket(bucket)
        if chosen is not None:
            chosen.hold(seconds)
