"""The ledger's part that says who works on a job, and repairs what a stopped worker left.

Leases: a host `claim`s a job before it sends anything for it, `renew`s all its claims while
it works, and loses them when it stops renewing for `ttl` seconds; another host may then claim
the job (`take_over`) and carry on from the state the ledger records. A transition given
`holder=` commits only while that host still holds the job's claim, so a host that was
presumed dead can never move a job that another host took over. `recover` is the same repair
for one's own work, once at start-up.
"""

from __future__ import annotations

from typing import Any

from promptdrop.ledger.errors import StaleTransition
from promptdrop.ledger.jobs import JobsMixin
from promptdrop.ledger.records import Job, Recovery
from promptdrop.ledger.states import JobState

# Unfinished work a dead host may have left: these are taken over once its claim expires.
_IN_HAND = (JobState.UPLOADING, JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING)


class LeasesMixin(JobsMixin):
    """Claims on jobs, taking over a dead host's work, and repairing one's own after a crash."""

    def claim(self, job_id: int, host: str, ttl: float) -> bool:
        """Claim the job for `host` for `ttl` seconds; True when it is now ours.

        Atomic in the database: of several hosts claiming at once exactly one wins. A host
        may claim again what it already holds (that renews it); a claim whose time ran out
        may be taken by anyone.
        """
        return (
            self._run(
                "INSERT INTO leases (job_id, host, expires, claimed_at)"
                f" VALUES (?, ?, {self._NOW} + ?, {self._NOW})"
                " ON CONFLICT (job_id) DO UPDATE SET host = excluded.host,"
                " expires = excluded.expires, claimed_at = excluded.claimed_at"
                " WHERE leases.host = excluded.host OR leases.expires <= excluded.claimed_at",
                [job_id, host, float(ttl)],
            )
            == 1
        )

    def renew(self, host: str, ttl: float) -> int:
        """Extend every claim `host` still holds to `ttl` seconds from now; return how many.

        A claim another host took over is no longer ours and is not touched.
        """
        return self._run(
            f"UPDATE leases SET expires = {self._NOW} + ? WHERE host = ?", [float(ttl), host]
        )

    def release(self, job_id: int, host: str) -> bool:
        """Give up `host`'s claim on the job (no-op when it is not ours); True if released."""
        return self._run("DELETE FROM leases WHERE job_id = ? AND host = ?", [job_id, host]) == 1

    def release_all(self, host: str) -> int:
        """Give up every claim of `host` (a clean stop: others may take the work over now)."""
        return self._run("DELETE FROM leases WHERE host = ?", [host])

    def holder(self, job_id: int) -> str | None:
        """The host whose claim on the job is still running, if any."""
        rows = self._rows(
            f"SELECT host FROM leases WHERE job_id = ? AND expires > {self._NOW}", [job_id]
        )
        return str(rows[0]["host"]) if rows else None

    def expired_claims(self) -> list[Job]:
        """Jobs a host was working on and stopped renewing: free for another host to take over.

        Unfinished work (uploading, submitting, running, downloading) with no live claim, and
        pending jobs whose claim ran out (their host died before sending anything).
        """
        marks = ",".join("?" * len(_IN_HAND))
        rows = self._rows(
            "SELECT jobs.* FROM jobs LEFT JOIN leases ON leases.job_id = jobs.id"
            f" WHERE (jobs.state IN ({marks})"
            f" AND (leases.job_id IS NULL OR leases.expires <= {self._NOW}))"
            f" OR (jobs.state = ? AND leases.expires <= {self._NOW}) ORDER BY jobs.id",
            [*(str(s) for s in _IN_HAND), str(JobState.PENDING)],
        )
        return [self._job(r) for r in rows]

    def take_over(self, host: str, ttl: float) -> list[Job]:
        """Claim every job whose claim expired, and repair it as `recover` would; return them.

        Running tasks stay RUNNING (poll them by task id: never resubmit); a submission whose
        answer died with its host becomes AMBIGUOUS (never resent); an interrupted upload
        starts over; an interrupted download is fetched again. Jobs another host claims
        first, or moves meanwhile, are left to it.
        """
        taken = []
        for job in self.expired_claims():
            if not self.claim(job.id, host, ttl):
                continue
            try:
                if job.state is JobState.SUBMITTING:
                    why = "the host that sent this request stopped before its answer was recorded"
                    job = self.transition(
                        job.id,
                        job.state,
                        JobState.AMBIGUOUS,
                        holder=host,
                        detail=f"taken over: {why}",
                        error=why,
                    )
                elif job.state is JobState.UPLOADING:
                    job = self.transition(
                        job.id,
                        job.state,
                        JobState.PENDING,
                        holder=host,
                        detail="taken over: upload interrupted; will upload again",
                    )
                elif job.state is JobState.DOWNLOADING:
                    job = self.transition(
                        job.id,
                        job.state,
                        JobState.RUNNING,
                        holder=host,
                        detail="taken over: download interrupted; will fetch again",
                    )
                else:
                    self.note_event(job.id, f"taken over by {host}")
            except StaleTransition:
                continue
            taken.append(self.get_job(job.id))
        return taken

    def _claimed_by_others(self, host: str) -> set[int]:
        rows = self._rows(
            f"SELECT job_id FROM leases WHERE host <> ? AND expires > {self._NOW}", [host]
        )
        return {int(r["job_id"]) for r in rows}

    def recover(self, host: str | None = None) -> Recovery:
        """Repair what a crash left mid-step; call once at start, before any work.

        SUBMITTING jobs become AMBIGUOUS (the paid POST may have created a task: never resent
        by our own logic), UPLOADING ones start over (uploads are free), DOWNLOADING ones go
        back to RUNNING so the task is polled for a fresh URL. RUNNING jobs stay as they are:
        the caller polls them again. With `host` (a shared ledger), jobs that another host
        holds a live claim on are its business and are left alone.
        """
        others = self._claimed_by_others(host) if host is not None else set()
        counts = {}
        for src, dst, why in (
            (
                JobState.SUBMITTING,
                JobState.AMBIGUOUS,
                "stopped after the request was sent and before its answer was recorded",
            ),
            (JobState.UPLOADING, JobState.PENDING, "upload interrupted; will upload again"),
            (JobState.DOWNLOADING, JobState.RUNNING, "download interrupted; will fetch again"),
        ):
            jobs = [j for j in self.jobs(src) if j.id not in others]
            for job in jobs:
                fields: dict[str, Any] = {}
                if dst is JobState.AMBIGUOUS:
                    fields["error"] = why
                self.transition(job.id, src, dst, detail=f"recovery: {why}", **fields)
            counts[src] = len(jobs)
        return Recovery(
            ambiguous=counts[JobState.SUBMITTING],
            uploads_restarted=counts[JobState.UPLOADING],
            downloads_restarted=counts[JobState.DOWNLOADING],
            running=len([j for j in self.jobs(JobState.RUNNING) if j.id not in others]),
        )
