"""Sliding-window rate limits, per bucket: a per-second rate and a 10-second burst."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The outcome of one check, with what the X-RateLimit-* headers say."""

    allowed: bool
    limit: float
    remaining: int
    reset: int  # seconds until the window that binds has a free slot again
    retry_after: int  # seconds; meaningful when refused


class Bucket:
    """Requests accepted in the last second must stay within `per_s`, and those in the last
    ten seconds within `burst_10s`. Refused requests are not recorded, so they do not use up
    the allowance. Not thread-safe: the caller holds the emulator's lock."""

    def __init__(self, category: str, per_s: float, burst_10s: int) -> None:
        self.category = category
        self.per_s = per_s
        self.burst_10s = burst_10s
        self._accepted: deque[float] = deque()

    def check(self, now: float) -> Decision:
        """Record the request at monotonic time `now` if it is allowed; say what happened."""
        while self._accepted and self._accepted[0] <= now - 10.0:
            self._accepted.popleft()
        last_second = [t for t in self._accepted if t > now - 1.0]
        per_s_cap = max(1, math.floor(self.per_s))
        second_full = len(last_second) >= per_s_cap
        burst_full = len(self._accepted) >= self.burst_10s
        if second_full or burst_full:
            waits = []
            if second_full:
                waits.append(last_second[len(last_second) - per_s_cap] + 1.0 - now)
            if burst_full:
                waits.append(self._accepted[len(self._accepted) - self.burst_10s] + 10.0 - now)
            wait = max(waits)
            retry = max(1, math.ceil(wait))
            return Decision(False, self.per_s, 0, retry, retry)
        self._accepted.append(now)
        remaining = min(per_s_cap - len(last_second) - 1, self.burst_10s - len(self._accepted))
        first = last_second[0] if last_second else now
        reset = max(1, math.ceil(first + 1.0 - now))
        return Decision(True, self.per_s, max(0, remaining), reset, 0)

    def clear(self) -> None:
        """Forget every accepted request."""
        self._accepted.clear()
