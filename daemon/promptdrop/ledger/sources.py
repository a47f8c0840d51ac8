"""The ledger's part that remembers prompt files: what each is now, and what it asked for."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptdrop.ledger.core import LedgerCore
from promptdrop.ledger.records import Source
from promptdrop.ledger.states import JobState


class SourcesMixin(LedgerCore):
    """Prompt files, by path: their status, their bytes' hash and the request they make."""

    def _source(self, r: Mapping[str, Any]) -> Source:
        return Source(
            path=self._paths.decode(r["path"]),
            rule=r["rule"],
            status=r["status"],
            content_sha256=r["content_sha256"],
            request_hash=r["request_hash"],
            image_count=r["image_count"],
            error=r["error"],
        )

    def get_source(self, path: Path | str) -> Source | None:
        rows = self._rows("SELECT * FROM sources WHERE path = ?", [self._paths.encode(path)])
        return self._source(rows[0]) if rows else None

    def put_source(
        self,
        path: Path | str,
        *,
        rule: str | None,
        status: str,
        content_sha256: str | None = None,
        request_hash: str | None = None,
        image_count: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record what the prompt file at `path` is now (insert or replace)."""
        self._put_source(
            path,
            rule=rule,
            status=status,
            content_sha256=content_sha256,
            request_hash=request_hash,
            image_count=image_count,
            error=error,
        )

    def _put_source(
        self,
        path: Path | str,
        *,
        rule: str | None,
        status: str,
        content_sha256: str | None,
        request_hash: str | None,
        image_count: int | None,
        error: str | None,
    ) -> None:
        self._run(
            "INSERT INTO sources (path, rule, status, content_sha256, request_hash, image_count,"
            " error, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET"
            " rule=excluded.rule, status=excluded.status,"
            " content_sha256=excluded.content_sha256, request_hash=excluded.request_hash,"
            " image_count=excluded.image_count, error=excluded.error,"
            " updated_at=excluded.updated_at",
            [
                self._paths.encode(path),
                rule,
                status,
                content_sha256,
                request_hash,
                image_count,
                error,
                self._clock(),
            ],
        )

    def is_settled(self, path: Path | str, content_sha256: str) -> bool:
        """True when the prompt file at `path` is recorded as active with these bytes and each
        of its images is DONE with a file recorded for this very source from the job's current
        generation (whether the files are still there is `settled_outputs`' caller's to ask)."""
        return self.settled_outputs(path, content_sha256) is not None

    def settled_outputs(self, path: Path | str, content_sha256: str) -> list[str] | None:
        """The current files recorded for the prompt file at `path` (not those set aside)
        when it is settled (see `is_settled`), else None: a rescan has nothing to do as long
        as each of them is there, which a `stat` tells. One query, so a restart on many done
        files does not pay three each."""
        rows = self._rows(
            "SELECT COALESCE(s.image_count, 1) AS wanted, j.id AS job, o.path AS out"
            " FROM sources s LEFT JOIN jobs j ON j.request_hash = s.request_hash"
            " AND j.image_index <= COALESCE(s.image_count, 1) AND j.state = ?"
            " LEFT JOIN outputs o ON o.source_path = s.path AND o.job_id = j.id"
            " AND o.generation = j.generation AND o.superseded = 0"
            " WHERE s.path = ? AND s.status = 'active' AND s.content_sha256 = ?"
            " AND s.request_hash IS NOT NULL",
            [str(JobState.DONE), self._paths.encode(path), content_sha256],
        )
        if not rows:
            return None
        done = {r["job"] for r in rows if r["out"] is not None}
        if len(done) != int(rows[0]["wanted"]):
            return None
        return [self._paths.decode(r["out"]) for r in rows if r["out"] is not None]

    def set_source_status(self, path: Path | str, status: str, error: str | None = None) -> None:
        self._run(
            "UPDATE sources SET status = ?, error = ?, updated_at = ? WHERE path = ?",
            [status, error, self._clock(), self._paths.encode(path)],
        )

    def sources_for_request(self, request_hash: str, status: str = "active") -> list[Source]:
        rows = self._rows(
            "SELECT * FROM sources WHERE request_hash = ? AND status = ? ORDER BY path",
            [request_hash, status],
        )
        return [self._source(r) for r in rows]

    def sources_with_status(self, status: str) -> list[Source]:
        rows = self._rows("SELECT * FROM sources WHERE status = ? ORDER BY path", [status])
        return [self._source(r) for r in rows]

    def sources_under(self, folder: Path | str) -> list[Source]:
        """Every source at or below `folder` (or the one file, when `folder` is a file)."""
        prefix = self._paths.encode(str(folder).rstrip(os.sep) or os.sep).rstrip(os.sep)
        rows = self._rows(
            "SELECT * FROM sources WHERE path = ? OR substr(path, 1, CAST(? AS INTEGER)) = ?"
            " ORDER BY path",
            [prefix, len(prefix) + 1, prefix + os.sep],
        )
        return [self._source(r) for r in rows]
