"""The ledger's part that remembers uploaded reference images, so bytes go up only once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from promptdrop.ledger.core import LedgerCore


class UploadsMixin(LedgerCore):
    """Reference images already uploaded, by the sha256 of their bytes."""

    def cached_upload(self, sha256: str) -> str | None:
        """The URL a reference with these bytes was uploaded to, if it was."""
        rows = self._rows("SELECT url FROM uploads WHERE sha256 = ?", [sha256])
        return str(rows[0]["url"]) if rows else None

    def record_upload(self, sha256: str, url: str, upload_id: str | None, raw: Any) -> None:
        self._run(
            "INSERT INTO uploads (sha256, url, upload_id, response_json, uploaded_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET url=excluded.url,"
            " upload_id=excluded.upload_id, response_json=excluded.response_json,"
            " uploaded_at=excluded.uploaded_at",
            [sha256, url, upload_id, json.dumps(raw), self._clock()],
        )

    def forget_uploads(self, urls: Sequence[str]) -> int:
        """Drop cached uploads the API no longer accepts, so they are uploaded again."""
        if not urls:
            return 0
        marks = ",".join("?" * len(urls))
        return self._run(f"DELETE FROM uploads WHERE url IN ({marks})", list(urls))

    def upload_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) AS n FROM uploads")[0]["n"])
