"""The effective request of one prompt file: what the API is asked, its canonical form for the
ledger, and `request_hash`, the key of every job.

Two requests that would ask the API the same thing hash the same: an alias and its model id are
one model, a resolution that is the model's default is the same as none, a local reference is
known by its bytes (so a rename changes nothing) and `count` is left out (each image is its own
job). What the model is asked, `metadata`, is built from the capability table, so the hash covers
the resolution and every option.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from promptdrop.capabilities import ModelRow, api_metadata, row_of
from promptdrop.filecheck.fields import DEFAULT_SIZE, STYLE_SEPARATOR
from promptdrop.filecheck.locate import locate
from promptdrop.filecheck.per_model import kept_options, model_problems, prompt_limit_problem
from promptdrop.filecheck.problems import Problem


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
    resolution: str | None = None  # as asked; None: the model's default
    # Compared, not hashed (a dict is not hashable): the request hash is the identity anyway.
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def row(self) -> ModelRow:
        """The model's row in the capability table."""
        return row_of(self.model)

    @property
    def effective_resolution(self) -> str | None:
        """The resolution the image is made at (None for a model without resolutions)."""
        return self.resolution or self.row.default_resolution

    @property
    def metadata(self) -> dict[str, Any]:
        """The request's `metadata`, as the model's documentation places each field."""
        return api_metadata(self.row, self.resolution, self.orientation, self.options)

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
            "resolution": self.effective_resolution,
            "options": dict(self.options),
            "metadata": self.metadata,
            "references": [r.canonical() for r in self.references],
        }


def effective_request(
    values: Mapping[str, Any],
    path: Path,
    text: str,
    references: Sequence[Reference],
    inherited: Mapping[str, str] | None = None,
) -> tuple[Request | None, list[Problem]]:
    """The Request of merged values (folder defaults, then the prompt file), or its problems.

    The style is appended to the prompt after a blank line and the sum must stay within the
    model's prompt limit, with no control characters but newlines and tabs. What the model
    refuses is a problem (located where the prompt file writes it); an inherited orientation
    or option the model does not take is left out instead (`inherited`: where each value that
    the prompt file does not set comes from).
    """
    inherited = inherited or {}
    problems: list[Problem] = []
    # Outer whitespace is formatting (multi-line TOML strings end in a newline), not content.
    prompt: str = values["prompt"].strip()
    style = (values.get("style") or "").strip()
    full = prompt + STYLE_SEPARATOR + style if style else prompt
    line, col = locate(text, "prompt")
    too_long = prompt_limit_problem(values.get("model"), prompt, style, inherited)
    if too_long is not None:
        problems.append(Problem(path, too_long, line, col))
    if any(ord(c) < 32 and c not in "\n\r\t" for c in full):
        problems.append(
            Problem(path, "prompt contains invisible control characters; remove them", line, col)
        )
    for key, message in model_problems(values, len(references), inherited):
        problems.append(Problem(path, message, *where_written(text, key, inherited)))
    if problems:
        return None, problems
    row = row_of(values.get("model"))
    return Request(
        model=row.id,  # an alias and its id are one model, and hash equal
        prompt=full,
        size=values.get("size", DEFAULT_SIZE),
        count=values.get("count", 1),
        orientation=values.get("orientation") if row.orientation else None,
        references=tuple(references),
        resolution=values.get("resolution"),
        options=kept_options(row, values.get("options") or {}, inherited),
    ), []


def where_written(
    text: str, key: str, inherited: Mapping[str, str]
) -> tuple[int | None, int | None]:
    """Where the prompt file writes `key` (an option under [options]); nowhere if inherited."""
    if key in inherited:
        return None, None
    if key.startswith("options."):
        name = key.removeprefix("options.")
        line, col = locate(text, name, "options")
        return (line, col) if line is not None else locate(text, "options")
    return locate(text, key)
