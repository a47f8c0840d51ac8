"""Reference images going up to the API: once per content hash, cached in the ledger."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from promptdrop.api import ToApisClient
from promptdrop.imaging import EXTENSIONS, MIME_TYPES
from promptdrop.ledger import LedgerBase


class Uploads:
    """The URL the API gives each reference image, uploading it only when none is cached."""

    def __init__(self, ledger: LedgerBase, client: ToApisClient) -> None:
        self._ledger = ledger
        self._client = client
        self._locks: dict[str, asyncio.Lock] = {}

    async def url(self, ref: dict[str, Any]) -> str:
        """The URL of the local reference `ref` (from a canonical request's "references").

        Raises OSError if the file cannot be read, ValueError if it changed since the prompt
        file was read, and the client's ApiError if the upload fails.
        """
        # One upload per content hash, even when many jobs want the same reference at once.
        lock = self._locks.setdefault(ref["sha256"], asyncio.Lock())
        async with lock:
            cached = self._ledger.cached_upload(ref["sha256"])
            if cached:
                return cached
            return await self._upload_now(ref)

    async def _upload_now(self, ref: dict[str, Any]) -> str:
        data = await asyncio.to_thread(Path(ref["path"]).read_bytes)
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise ValueError("it changed after the prompt file was read")
        fmt = ref["format"] or "png"
        up = await self._client.upload_image(
            data, filename=f"reference{EXTENSIONS[fmt]}", mime_type=MIME_TYPES[fmt]
        )
        self._ledger.record_upload(ref["sha256"], up.url, up.id, up.raw)
        return up.url
