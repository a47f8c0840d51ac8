"""The effective request of one prompt file: what the API is asked, its canonical form for the
ledger, and `request_hash`, the key of every job.

Two requests that would ask the API the same thing hash the same: the model aliases are one
model, a local reference is known by its bytes (so a rename changes nothing) and `count` is left
out (each image is its own job).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from promptdrop.filecheck.fields import (
    CANONICAL_MODEL,
    DEFAULT_SIZE,
    MAX_PROMPT_CHARS,
    STYLE_SEPARATOR,
)
from promptdrop.filecheck.locate import locate
from promptdrop.filecheck.problems import Problem
from promptdrop.filecheck.wording import prompt_length_message


@dataclass(frozen=True)
class Reference:
    """A reference image: a local file (identified by its bytes) or a web address."""

    source: str
    kind: Literal["file", "url"]
    url: str | None = None
    path: Path | None = None
    sha256: str | None = None
    size: int | None = None
    format: str | None = None

    @property
    def key(self) -> str:
        """What the request hash sees: the bytes' hash for files (so renames don't matter)."""
        return f"sha256:{self.sha256}" if self.kind == "file" else f"url:{self.url}"

    def canonical(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "url": self.url,
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format,
            "key": self.key,
        }


@dataclass(frozen=True)
class Request:
    """The effective request of one prompt file, with folder defaults applied."""

    model: str
    prompt: str
    size: str
    count: int
    orientation: str | None
    references: tuple[Reference, ...] = field(default=())

    @property
    def metadata(self) -> dict[str, str]:
        return {"orientation": self.orientation} if self.orientation else {}

    @property
    def request_hash(self) -> str:
        """Hex sha256 of what the API would be asked; count is left out (one job per index)."""
        body = {
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "metadata": self.metadata,
            "references": [r.key for r in self.references],
        }
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def canonical(self) -> dict[str, Any]:
        """Everything about the request, JSON-serialisable, for the ledger."""
        return {
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "count": self.count,
            "orientation": self.orientation,
            "metadata": self.metadata,
            "references": [r.canonical() for r in self.references],
        }


def effective_request(
    values: Mapping[str, Any], path: Path, text: str, references: Sequence[Reference]
) -> tuple[Request | None, list[Problem]]:
    """The Request of merged values (folder defaults, then the prompt file), or its problems.

    The style is appended to the prompt after a blank line and the sum must stay within 1000
    characters, with no control characters but newlines and tabs.
    """
    problems: list[Problem] = []
    # Outer whitespace is formatting (multi-line TOML strings end in a newline), not content.
    prompt: str = values["prompt"].strip()
    style = (values.get("style") or "").strip()
    full = prompt + STYLE_SEPARATOR + style if style else prompt
    line, col = locate(text, "prompt")
    if not prompt.strip() or len(full) > MAX_PROMPT_CHARS:
        problems.append(Problem(path, prompt_length_message(prompt, style), line, col))
    if any(ord(c) < 32 and c not in "\n\r\t" for c in full):
        problems.append(
            Problem(path, "prompt contains invisible control characters; remove them", line, col)
        )
    if problems:
        return None, problems
    # Both model names are the same model: the canonical one makes them hash equal.
    return Request(
        model=CANONICAL_MODEL,
        prompt=full,
        size=values.get("size", DEFAULT_SIZE),
        count=values.get("count", 1),
        orientation=values.get("orientation"),
        references=tuple(references),
    ), []
