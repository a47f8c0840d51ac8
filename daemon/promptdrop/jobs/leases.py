"""Claims on jobs in a ledger shared by several hosts: taken, renewed, and taken over."""

from __future__ import annotations

import asyncio

import structlog

from promptdrop.jobs import notes
from promptdrop.jobs.core import EngineCore
from promptdrop.ledger import JobState

S = JobState
log = structlog.get_logger("promptdrop.engine")


class Leases(EngineCore):
    """This host's claims (a no-op with a ledger of our own: `host` is None)."""

    def _claim(self, job_id: int) -> bool:
        """Claim the job for this host (always True with a ledger of our own)."""
        if self.host is None:
            return True
        if not self.ledger.claim(job_id, self.host, self.options.lease_ttl):
            self._claimed.discard(job_id)
            return False
        self._claimed.add(job_id)
        self._arm_lease_timer()
        return True

    def _arm_lease_timer(self) -> None:
        if (
            self.host is None
            or self.stopping
            or (self._lease_timer is not None and not self._lease_timer.done())
        ):
            return
        self._lease_timer = asyncio.get_running_loop().create_task(
            self._lease_loop(), name="lease-timer"
        )

    async def _lease_loop(self) -> None:
        # Not a job task: `wait_idle` does not wait for it. Renews this host's claims, and takes
        # over the work of hosts that stopped renewing theirs: running tasks are polled by
        # their task id, never sent again; a submission whose answer died with its host is
        # ambiguous, as after a crash.
        assert self.host is not None
        while not self.stopping:
            await asyncio.sleep(self.options.lease_ttl / 3)
            try:
                self._renew_and_take_over(self.host)
            except Exception:
                log.exception("could not renew or take over claims; trying again")

    def _renew_and_take_over(self, host: str) -> None:
        self.ledger.renew(host, self.options.lease_ttl)
        for job in self.ledger.take_over(host, self.options.lease_ttl):
            log.info(
                "took over a job of a host that stopped",
                job=job.id,
                state=str(job.state),
                task=job.task_id,
            )
            if job.state is S.AMBIGUOUS and job.business_id is not None:
                self.launch(job.id)  # looked up by its business id (jobs.settle)
            elif job.state is S.AMBIGUOUS:  # final: its claim ended with the move
                self._note_sources(job, lambda j, s: notes.ambiguous_text(s, j.request))
            else:
                self._claimed.add(job.id)
                self.launch(job.id)
