"""How long to wait before trying again: the one shape of every repeated wait in promptdrop.

Every wait that grows after each failure (an API request retried, a submission pause after a
refused key, a write waiting for a full disk, the shared ledger's reconnect) is a `Backoff`:
a first delay multiplied by `factor` after each try, never above `cap`, and shortened by a
random share of up to `jitter` so that many waiters spread out. The named policies below are
the daemon's; change a wait here and nowhere else.

Pure: the caller passes the attempt number and, for jitter, a number drawn from [0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """first * factor**attempt, capped at cap, less up to `jitter` of it at random.

    jitter 0 gives fixed delays; jitter 1 is "full jitter" (uniform between 0 and the delay),
    which spreads a crowd of retries best.
    """

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.first < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(
                "Backoff needs non-negative delays, factor >= 1 and jitter between 0 and 1"
            )

    def ceiling(self, attempt: int) -> float:
        """The delay before try `attempt + 1` (attempt 0: the first wait), before jitter."""
        if attempt < 0:
            raise ValueError("attempt counts from 0")
        # factor**attempt overflows a float long before it matters: stop at the cap.
        delay = self.first
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.cap:
                return self.cap
        return min(delay, self.cap)

    def delay(self, attempt: int, draw: float = 0.0) -> float:
        """The wait before try `attempt + 1`, with `draw` (from [0, 1)) taken off as jitter."""
        if not 0 <= draw < 1:
            raise ValueError("draw is a number from [0, 1)")
        return self.ceiling(attempt) * (1.0 - self.jitter * draw)


# An API request that may be repeated (a poll, a download, an upload, or a submission the
# server provably did not take): 0.5 s, 1 s, 2 s... up to 30 s, full jitter.
API_RETRY = Backoff(first=0.5, cap=30.0, jitter=1.0)
# A refused key or an empty quota pauses every submission: 60 s, then doubling to 15 minutes.
ACCOUNT_PAUSE = Backoff(first=60.0, cap=900.0)
# The disk holding the ledger is full: a task id or a file event waits, 0.5 s up to 10 s.
DISK_FULL = Backoff(first=0.5, cap=10.0)
# The shared PostgreSQL ledger went away: reconnect after 0.2 s, then up to every 2 s.
LEDGER_RECONNECT = Backoff(first=0.2, cap=2.0)
