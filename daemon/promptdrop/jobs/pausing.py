"""The account pause: after a refused key or an empty quota, no job submits until it is over.

The wait grows after each refusal while paused (a `Backoff`, by default the ACCOUNT_PAUSE
policy: 60 s doubling to 15 minutes) and is lifted by the first submission that goes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from promptdrop.backoff import Backoff
from promptdrop.jobs import notes


@dataclass
class Pause:
    reason: str
    until: float
    wait: float


class AccountPause:
    """Whether submissions are paused now, and the wait for it to end."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float]) -> None:
        self.backoff = backoff
        self.current: Pause | None = None
        self._clock = clock
        self._refusals = 0  # refusals since the account last worked
        self._unpaused = asyncio.Event()
        self._unpaused.set()

    def begin(self, reason: str, message: str) -> Pause:
        """Pause (again, for longer): `reason` "auth" (a refused key) or "quota"."""
        wait = self.backoff.delay(self._refusals)
        self._refusals += 1
        self.current = Pause(
            reason=f"{notes.pause_cause(reason)}: {message}", until=self._clock() + wait, wait=wait
        )
        self._unpaused.clear()
        return self.current

    def lift(self) -> None:
        """The account works again."""
        self.current = None
        self._refusals = 0
        self._unpaused.set()

    def release(self) -> None:
        """Wake every waiter (a stop): they look at `stopping` and leave."""
        self._unpaused.set()

    async def wait(self, stopping: Callable[[], bool]) -> None:
        """Return once the pause is over (or on a stop), letting requests through again."""
        while self.current is not None and not stopping():
            delay = self.current.until - self._clock()
            if delay <= 0:
                # Let requests through again; the next refusal pauses for longer.
                self._unpaused.set()
                return
            try:
                await asyncio.wait_for(self._unpaused.wait(), timeout=min(delay, 5.0))
            except TimeoutError:
                continue
            return
