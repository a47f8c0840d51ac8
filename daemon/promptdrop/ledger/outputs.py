"""The ledger's part that remembers the files promptdrop wrote into users' folders.

A file is ours only while its record says so, with the bytes' hash; a file kept aside as an
earlier version ("poster.v1.png") keeps its record, marked superseded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptdrop.ledger.core import LedgerCore
from promptdrop.ledger.records import Job, Output


class OutputsMixin(LedgerCore):
    """Files promptdrop wrote, by path, with the job and generation they came from."""

    def _output(self, r: Mapping[str, Any]) -> Output:
        return Output(
            id=r["id"],
            path=self._paths.decode(r["path"]),
            job_id=r["job_id"],
            generation=r["generation"] or 0,
            source_path=None if r["source_path"] is None else self._paths.decode(r["source_path"]),
            sha256=r["sha256"],
            format=r["format"],
            superseded=bool(r["superseded"]),
        )

    def record_output(
        self,
        path: Path | str,
        *,
        job: Job,
        source_path: Path | str | None,
        sha256: str,
        fmt: str | None,
    ) -> None:
        """Remember that promptdrop wrote `path` with these bytes (replaces a stale record)."""
        self._run(
            "INSERT INTO outputs (path, job_id, generation, source_path, sha256, format,"
            " written_at, superseded) VALUES (?,?,?,?,?,?,?,0) ON CONFLICT(path) DO UPDATE SET"
            " job_id=excluded.job_id, generation=excluded.generation,"
            " source_path=excluded.source_path, sha256=excluded.sha256, format=excluded.format,"
            " written_at=excluded.written_at, superseded=0",
            [
                self._paths.encode(path),
                job.id,
                job.generation,
                None if source_path is None else self._paths.encode(source_path),
                sha256,
                fmt,
                self._clock(),
            ],
        )

    def output_at(self, path: Path | str) -> Output | None:
        """The record of a file promptdrop wrote at `path`, if any."""
        rows = self._rows("SELECT * FROM outputs WHERE path = ?", [self._paths.encode(path)])
        return self._output(rows[0]) if rows else None

    def move_output(self, old: Path | str, new: Path | str, *, superseded: bool = True) -> None:
        """Record that one of our files was renamed: aside to keep an earlier version (the
        default), or back to its plain name as the current image (superseded=False)."""
        old_key, new_key = self._paths.encode(old), self._paths.encode(new)
        flag = 1 if superseded else 0

        def work() -> None:
            # A stale record of a file the user deleted must not block the name.
            self._run("DELETE FROM outputs WHERE path = ?", [new_key])
            self._run(
                "UPDATE outputs SET path = ?, superseded = ? WHERE path = ?",
                [new_key, flag, old_key],
            )

        def committed() -> bool:
            return not self._rows("SELECT 1 FROM outputs WHERE path = ?", [old_key]) and bool(
                self._rows(
                    "SELECT 1 FROM outputs WHERE path = ? AND superseded = ?", [new_key, flag]
                )
            )

        self._atomic(work, committed)

    def forget_output(self, path: Path | str) -> None:
        """Drop the record of a file of ours that is gone (its image now lives elsewhere)."""
        self._run("DELETE FROM outputs WHERE path = ?", [self._paths.encode(path)])

    def outputs_for_job(self, job_id: int) -> list[Output]:
        rows = self._rows("SELECT * FROM outputs WHERE job_id = ? ORDER BY id", [job_id])
        return [self._output(r) for r in rows]

    def output_for(self, source_path: Path | str, job: Job) -> Output | None:
        """The file written for this source from this job's current generation, if any."""
        rows = self._rows(
            "SELECT * FROM outputs WHERE source_path = ? AND job_id = ? AND generation = ?",
            [self._paths.encode(source_path), job.id, job.generation],
        )
        return self._output(rows[0]) if rows else None

    def outputs_for_source_job(self, source_path: Path | str, job: Job) -> list[Output]:
        """Every file written for this source from this job's current generation (its plain
        name, a version it was set aside to, or both after a copy), oldest first."""
        rows = self._rows(
            "SELECT * FROM outputs WHERE source_path = ? AND job_id = ? AND generation = ?"
            " ORDER BY id",
            [self._paths.encode(source_path), job.id, job.generation],
        )
        return [self._output(r) for r in rows]

    def outputs_with_sha(self, sha256: str) -> list[Output]:
        """Every file of ours recorded with these bytes, whichever job or source it was for."""
        rows = self._rows("SELECT * FROM outputs WHERE sha256 = ? ORDER BY id", [sha256])
        return [self._output(r) for r in rows]

    def outputs_for_source(self, source_path: Path | str) -> list[Output]:
        rows = self._rows(
            "SELECT * FROM outputs WHERE source_path = ? ORDER BY id",
            [self._paths.encode(source_path)],
        )
        return [self._output(r) for r in rows]
