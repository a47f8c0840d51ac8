"""Prompt files, folder defaults and rules files: reading them safely, checking them, hashing them.

The road of a prompt file starts here: `read_prompt_file` turns a settled `NAME.prompt.toml`
(plus the `.promptdrop.toml` defaults above it) into a `Request`, the effective request whose
`request_hash` keys every job in the ledger, or raises `SpecError` with every problem found, each
in words a designer understands. Nothing in this module talks to the API.

Files are read defensively: anything that is not a small regular UTF-8 text file is refused before
it is parsed, and nothing is ever opened that could block (a FIFO is refused by `stat`, before any
`open`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PureWindowsPath
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptdrop import imaging

PROMPT_SUFFIX = ".prompt.toml"
DEFAULTS_NAME = ".promptdrop.toml"
MAX_PROMPT_FILE_BYTES = 65536
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
MAX_REFERENCES = 14
MAX_PROMPT_CHARS = 1000
MAX_COUNT = 10
# Rules files are small too; the same cap keeps a stray binary from being slurped.
MAX_RULES_FILE_BYTES = 1024 * 1024

Size = Literal["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"]
Model = Literal["gemini-2.5-flash-image-preview", "nano-banana"]
Orientation = Literal["landscape", "portrait"]
PollMode = Literal["auto", "always", "never"]
AccountGroup = Literal["default", "vip", "svip"]
SchemaKind = Literal["prompt", "defaults", "rules"]

SIZES: tuple[str, ...] = get_args(Size)
MODELS: tuple[str, ...] = get_args(Model)
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)
CANONICAL_MODEL = "gemini-2.5-flash-image-preview"
DEFAULT_SIZE = "1:1"
STYLE_SEPARATOR = "\n\n"


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, located where possible (1-based line and column)."""

    path: Path
    message: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.message}"


class SpecError(Exception):
    """A prompt, defaults or rules file cannot be used; `problems` says every reason found.

    `not_ready` is True only when the failure may come from a file caught half-written (a TOML
    syntax error, UTF-8 cut off at the very end, an empty file): the caller may wait and read again.
    """

    def __init__(self, problems: Iterable[Problem], *, not_ready: bool = False) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.not_ready = not_ready
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def _by_position(p: Problem) -> tuple[bool, int, int]:
    return (p.line is None, p.line or 0, p.col or 0)


def _fail(
    path: Path,
    message: str,
    line: int | None = None,
    col: int | None = None,
    *,
    not_ready: bool = False,
) -> SpecError:
    return SpecError([Problem(path, message, line, col)], not_ready=not_ready)


# --------------------------------------------------------------------------- models

_STRICT = ConfigDict(strict=True, extra="forbid")


class PromptFile(BaseModel):
    """The keys of a NAME.prompt.toml file, as written (before folder defaults apply)."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop prompt file")

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What the image should show. Required, 1 to 1000 characters; a folder "
        "'style' from .promptdrop.toml is appended after a blank line and counts too.",
    )
    size: Size | None = Field(
        default=None,
        description="Aspect ratio: 1:1 (the default), 16:9, 9:16, 4:3, 3:4, 3:2 or 2:3.",
    )
    model: Model | None = Field(
        default=None,
        description="gemini-2.5-flash-image-preview (the default) or its alias nano-banana.",
    )
    count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="How many images to make, 1 to 10 (default 1); each is one paid API task.",
    )
    orientation: Orientation | None = Field(
        default=None, description="Optional hint for the API: landscape or portrait."
    )
    references: list[str] | None = Field(
        default=None,
        max_length=MAX_REFERENCES,
        description="Up to 14 reference images: paths relative to this file's folder (JPEG, PNG "
        "or WebP, at most 10 MB, inside the watched folder) or http(s) web addresses. Replaces "
        "the references of .promptdrop.toml.",
    )


class FolderDefaults(BaseModel):
    """Defaults from a `.promptdrop.toml` (or a rule's `[rules.defaults]`); every key optional."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop folder defaults")

    size: Size | None = Field(
        default=None, description="Default aspect ratio: 1:1, 16:9, 9:16, 4:3, 3:4, 3:2 or 2:3."
    )
    model: Model | None = Field(
        default=None,
        description="Default model: gemini-2.5-flash-image-preview or its alias nano-banana.",
    )
    count: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="Default number of images, 1 to 10."
    )
    orientation: Orientation | None = Field(
        default=None, description="Default orientation hint: landscape or portrait."
    )
    style: str | None = Field(
        default=None,
        max_length=MAX_PROMPT_CHARS,
        description="Text appended (after a blank line) to every prompt in this folder and its "
        "subfolders. The prompt plus style must stay within 1000 characters. An empty text "
        "switches off a style inherited from a folder above.",
    )
    references: list[str] | None = Field(
        default=None,
        max_length=MAX_REFERENCES,
        description="Reference images for every prompt here that lists none of its own: paths "
        "relative to the folder of this defaults file, or http(s) web addresses. At most 14.",
    )


class RuleConfig(BaseModel):
    """One watched folder and how it is watched."""

    model_config = ConfigDict(strict=True, extra="forbid", title="rule")

    name: str = Field(
        min_length=1,
        description="A short unique name for this watched folder, used in logs and status.",
    )
    path: Path = Field(
        strict=False,
        description="The folder to watch. Relative paths are "
        "relative to the rules file's folder; ~ means your home folder.",
    )
    recursive: bool = Field(default=True, description="Also watch subfolders (default true).")
    poll: PollMode = Field(
        default="auto",
        description="auto (poll only on network and FUSE filesystems), always "
        "(for shares that miss change events) or never.",
    )
    poll_interval: float = Field(
        default=5.0, gt=0, description="Seconds between scans when polling (default 5)."
    )
    settle: float = Field(
        default=1.0,
        ge=0,
        description="Seconds a file must stay unchanged "
        "before it is read, so half-synced files are not taken (default 1).",
    )
    max_in_flight: int = Field(
        default=4,
        ge=1,
        le=64,
        description="How many API tasks of this folder may run at once, 1 to 64 (default 4).",
    )
    daily_budget: int | None = Field(
        default=None,
        ge=1,
        description="At most this many tasks "
        "(one per image) are submitted per day for this folder, "
        "a day starting at local midnight; files over it wait for "
        "the next day, with a note beside them. Leave out for no "
        "limit.",
    )
    reconcile_interval: float = Field(
        default=600.0,
        ge=10,
        description="Seconds between full "
        "rescans that catch missed events, 10 or more (default "
        "600).",
    )
    resubmit_ambiguous: bool = Field(
        default=False,
        description="Resubmit a task whose "
        "submission answer was lost (may pay twice). Default false.",
    )
    defaults: FolderDefaults | None = Field(
        default=None,
        description="Folder defaults for the "
        "whole watched folder, below any .promptdrop.toml. "
        "Its references are relative to the watched folder.",
    )


class ApiSettings(BaseModel):
    """How to reach the ToAPIs API (the key itself never goes in a rules file)."""

    model_config = ConfigDict(strict=True, extra="forbid", title="api")

    base_url: str | None = Field(
        default=None,
        description="The API's address, e.g. "
        "https://toapis.com (default: TOAPIS_BASE_URL or "
        "https://toapis.com).",
    )
    account_group: AccountGroup = Field(
        default="default",
        description="Your ToAPIs account group, which sets the rate limits: default, vip or svip.",
    )
    timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds one API request "
        "may take before it counts as unanswered. A submission answered "
        "later is treated as lost: ambiguous, never resent.",
    )
    poll_first: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds between "
        "submitting an image and first asking whether it is ready "
        "(default 5, as the API's documentation advises). Lower it when "
        "your images usually take less; each ask counts against the "
        "query rate limit, never against what you pay. The "
        "--poll-interval option of promptdrop watch overrides it.",
    )
    poll_interval: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds between later "
        "asks while an image is not ready yet (default 5; the API "
        "advises 5 to 10), with a little random spread so many images "
        "do not ask at once. The --poll-interval option of promptdrop "
        "watch overrides it.",
    )
    submit_rate: float | None = Field(
        default=None,
        ge=0.1,
        le=1000,
        description="Image "
        "requests per second promptdrop sends at most (and ten "
        "times that in any 10 seconds). Leave out to keep to your "
        "account group's documented limit. Set it only if ToAPIs "
        "gave your account another limit: above the real one, the "
        "API refuses requests (nothing is paid; they are sent "
        "again 30 seconds later).",
    )


class RulesFile(BaseModel):
    """A whole rules file: API settings and the watched folders."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop rules file")

    api: ApiSettings = Field(default_factory=ApiSettings, description="API settings ([api] table).")
    rules: list[RuleConfig] = Field(
        min_length=1, description="The watched folders, one [[rules]] table each; at least one."
    )
    ledger: str | None = Field(
        default=None,
        description="A PostgreSQL URL "
        "(postgresql://USER@HOST/DATABASE) for a ledger shared by several "
        "computers watching the same synced folders, so each request is "
        "paid once; leave out to keep the ledger on this computer. Keep "
        "the password out of it: use ~/.pgpass or PGPASSWORD.",
    )


_PROMPT_KEYS = tuple(PromptFile.model_fields)
_DEFAULTS_KEYS = tuple(FolderDefaults.model_fields)
_RULE_KEYS = tuple(RuleConfig.model_fields)
_API_KEYS = tuple(ApiSettings.model_fields)
_CHOICES: dict[str, tuple[str, ...]] = {
    "size": SIZES,
    "model": MODELS,
    "orientation": ORIENTATIONS,
    "poll": get_args(PollMode),
    "account_group": get_args(AccountGroup),
}
_NEEDS: dict[str, str] = {
    "prompt": "text in quotes",
    "style": "text in quotes",
    "count": "a whole number from 1 to 10",
    "references": 'a list of file names or web addresses, like ["sketch.png"]',
    "name": "a non-empty text in quotes",
    "path": "a folder path in quotes",
    "recursive": "true or false",
    "resubmit_ambiguous": "true or false",
    "poll_interval": "a number of seconds greater than 0 (at most 600 under [api])",
    "poll_first": "a number of seconds greater than 0 and at most 600",
    "submit_rate": "a number of requests per second from 0.1 to 1000 (leave it out for your "
    "account group's limit)",
    "timeout": "a number of seconds greater than 0 and at most 600",
    "settle": "a number of seconds, 0 or more",
    "max_in_flight": "a whole number from 1 to 64",
    "daily_budget": "a whole number, 1 or more (leave it out for no limit)",
    "reconcile_interval": "a number of seconds, 10 or more",
    "base_url": 'a web address in quotes, like "https://toapis.com"',
    "defaults": "a table of folder defaults",
    "api": "a table ([api])",
    "rules": "a list of [[rules]] tables",
}


# --------------------------------------------------------------------------- requests


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


# --------------------------------------------------------------------------- safe reading

_TOML_POS = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.S)
_TOML_END = re.compile(r"^(?P<msg>.*?)\s*\(at end of document\)$", re.S)


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_bytes(path: Path, limit: int, what: str) -> bytes:
    """Read a regular file of at most `limit` bytes without ever blocking on it.

    `stat` comes first so a FIFO or device is refused without being opened; the open uses
    O_NONBLOCK and O_NOFOLLOW (callers pass a resolved path) and the type is checked again on the
    open descriptor, in case the file was swapped in between.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _fail(path, f"the {what} was not found") from None
    except OSError as exc:
        raise _fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, f"the {what} is {_kind_of(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise _fail(path, f"the {what} is {_human(st.st_size)}; it may be at most {_human(limit)}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _fail(path, f"the {what} is not a regular file")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if total > limit:
        raise _fail(path, f"the {what} is over {_human(limit)}; it may be at most {_human(limit)}")
    return b"".join(chunks)


def _human(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def _decode(path: Path, data: bytes) -> str:
    """Bytes to text: UTF-8 only; a leading UTF-8 byte order mark is accepted and dropped
    (some Windows editors add one), NUL bytes are refused (not a text file)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        raise _fail(
            path,
            "the file is empty"
            + ("; write at least a prompt line" if path.name.endswith(PROMPT_SUFFIX) else ""),
            not_ready=True,
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _byte_pos(data, nul)
        raise _fail(
            path,
            "the file contains NUL bytes, so it is not a text file; save it as plain UTF-8 text",
            line,
            col,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _byte_pos(data, exc.start)
        truncated = exc.end == len(data) and "unexpected end" in exc.reason
        raise _fail(
            path,
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
            line,
            col,
            not_ready=truncated,
        ) from None


def _byte_pos(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise _fail(
            path, "the file is nested too deeply to read; keep to plain keys and short lists"
        ) from None
    except ValueError as exc:  # tomllib.TOMLDecodeError, incl. impossible dates
        raw = str(exc)
        line: int | None = None
        col: int | None = None
        m = _TOML_POS.match(raw)
        if m:
            raw, line, col = m["msg"], int(m["line"]), int(m["col"])
        else:
            m = _TOML_END.match(raw)
            if m:
                raw = m["msg"] + " at the end of the file"
                line = text.count("\n") + 1
        raise _fail(
            path,
            f"this is not valid TOML: {raw}. Check quotes, brackets and '=' signs",
            line,
            col,
            not_ready=True,
        ) from None


def _load(
    path: Path, limit: int = MAX_PROMPT_FILE_BYTES, what: str = "file"
) -> tuple[dict[str, Any], str]:
    text = _decode(path, _read_bytes(path, limit, what))
    return _parse_toml(path, text), text


# --------------------------------------------------------------------------- locating keys

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")


def _key_pattern(key: str) -> re.Pattern[str]:
    k = re.escape(key)
    return re.compile(rf"^(\s*)(?:{k}|\"{k}\"|'{k}')\s*(?:=|\.)")


def _locate(
    text: str, key: str | None, table: str | None = None, index: int | None = None
) -> tuple[int | None, int | None]:
    """Best-effort line and column of `key` in a table (None: top level).

    `table` is a dotted header such as "api", "rules" or "rules.defaults"; `index` picks the
    n-th `[[rules]]` the table belongs to. With `key` None the header line itself is returned.
    Lines inside multi-line strings are skipped, roughly.
    """
    pat = _key_pattern(key) if key is not None else None
    current: str | None = None
    rules_seen = -1
    in_multiline = False
    for n, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if (line.count('"""') + line.count("'''")) % 2 == 1:
                in_multiline = False
            continue
        h = _HEADER.match(line)
        if h and not line.lstrip().startswith(("[=", '["')):
            current = h[2]
            if current == "rules" and h[1] == "[[":
                rules_seen += 1
            if (
                pat is None
                and table is not None
                and (current == table or current.startswith(table + "."))
                and (index is None or index == rules_seen)
            ):
                return n, line.index("[") + 1
            continue
        if (
            pat is not None
            and current == table
            and (index is None or table is None or index == rules_seen)
        ):
            m = pat.match(line)
            if m:
                return n, len(m[1]) + 1
        if (line.count('"""') + line.count("'''")) % 2 == 1:
            in_multiline = True
    return None, None


def _locate_key(
    text: str, key: str, value: Any, table: str | None = None, index: int | None = None
) -> tuple[int | None, int | None]:
    """Where a key is written: as `key = ...`, or as a `[table.key]` header of its own."""
    line, col = _locate(text, key, table, index)
    if line is None and isinstance(value, dict | list):
        line, col = _locate(text, None, f"{table}.{key}" if table else key, index)
    return line, col


# --------------------------------------------------------------------------- validation


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the text "{shown}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def _field_message(key: str, value: Any) -> str:
    """Our own wording for a wrong value: the key, what it is, what is allowed."""
    choices = _CHOICES.get(key)
    if choices is not None:
        if isinstance(value, str):
            return f"{key} '{value}' is not one of {', '.join(choices)}"
        return f"{key} must be one of {', '.join(choices)} (in quotes); it is {_describe(value)}"
    if key == "prompt" and isinstance(value, str):
        return _prompt_length_message(value, None)
    if key == "style" and isinstance(value, str):
        return (
            f"style is {len(value)} characters long; with the prompt it must stay within "
            f"{MAX_PROMPT_CHARS}"
        )
    if key == "references" and isinstance(value, list):
        return f"references lists {len(value)} images; the API takes at most {MAX_REFERENCES}"
    need = _NEEDS.get(key, "a different value")
    msg = f"{key} must be {need}; it is {_describe(value)}"
    if isinstance(value, str) and key in ("count", "max_in_flight", "daily_budget"):
        msg += f" (write {key} = {value.strip()} without quotes)" if value.strip().isdigit() else ""
    return msg


def _prompt_length_message(prompt: str, style: str | None) -> str:
    if not prompt.strip():
        return 'prompt is empty; write what the image should show, like prompt = "a red fox"'
    if style:
        total = len(prompt) + len(STYLE_SEPARATOR) + len(style)
        return (
            f"prompt with the folder style is {total} characters long (prompt {len(prompt)}, "
            f"style {len(style)}); the API takes at most {MAX_PROMPT_CHARS}. Shorten the "
            f"prompt, or the style in {DEFAULTS_NAME}"
        )
    return (
        f"prompt is {len(prompt)} characters long; the API takes at most {MAX_PROMPT_CHARS}. "
        "Shorten it"
    )


def _unknown_key_message(key: str, allowed: Sequence[str], what: str) -> str:
    if what == "defaults" and key == "prompt":
        return (
            f"'prompt' does not belong in {DEFAULTS_NAME}; put it in a NAME.prompt.toml file "
            "(use 'style' for text added to every prompt)"
        )
    if what == "prompt" and key == "style":
        return (
            f"'style' belongs in the folder's {DEFAULTS_NAME}; in a prompt file, write it "
            "into the prompt text"
        )
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}': did you mean '{close[0]}'?"
    return f"unknown key '{key}'; the keys allowed here are: {', '.join(allowed)}"


def _validate_table(
    model: type[BaseModel],
    raw: Mapping[str, Any],
    path: Path,
    text: str,
    what: str,
    *,
    table: str | None = None,
    index: int | None = None,
    prefix: str = "",
    skip: Sequence[str] = (),
) -> tuple[BaseModel | None, list[Problem]]:
    """Validate one TOML table against a model; return the model (if valid) and all problems.

    Unknown keys are reported by us (with a close-match suggestion), wrong values with our own
    wording per key; pydantic's text never reaches the user.
    """
    allowed = tuple(model.model_fields)
    problems: list[Problem] = []
    known: dict[str, Any] = {}
    for key, value in raw.items():
        if key in allowed:
            known[key] = value
        else:
            line, col = _locate_key(text, key, value, table, index)
            problems.append(
                Problem(path, prefix + _unknown_key_message(key, allowed, what), line, col)
            )
    for key in skip:
        known.pop(key, None)
    try:
        obj = model.model_validate(known)
    except ValidationError as exc:
        seen: set[str] = set()
        for err in exc.errors():
            loc = err["loc"]
            if not loc:
                continue
            key = str(loc[0])
            if key in seen:
                continue
            seen.add(key)
            line, col = _locate(text, key, table, index)
            if err["type"] == "missing":
                msg = f"{key} is missing; it is required"
                if key == "prompt":
                    msg = 'prompt is missing; add a line like prompt = "a red fox in the snow"'
                line, col = None, None
            elif key == "references" and len(loc) > 1 and isinstance(loc[1], int):
                msg = (
                    f"references entry {loc[1] + 1} must be a file name or web address in "
                    f"quotes; it is {_describe(err['input'])}"
                )
            else:
                msg = _field_message(key, known.get(key))
            problems.append(Problem(path, prefix + msg, line, col))
        return None, problems
    return (obj if not problems else None), problems


# --------------------------------------------------------------------------- references

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _is_url_like(source: str) -> bool:
    m = _SCHEME.match(source)
    if not m or len(m[1]) == 1:  # a single letter is a Windows drive, not a scheme
        return False
    return source[m.end() :].startswith("//") or m[1].lower() == "data"


def _reference_form_problem(source: str) -> str | None:
    """What is wrong with how a reference is written, before looking at any file."""
    if not source.strip():
        return "a references entry is empty; write a file name or a web address"
    if "\x00" in source:
        return f"reference {source!r} contains a NUL character"
    if _is_url_like(source):
        scheme = source.split(":", 1)[0].lower()
        if scheme == "data":
            return (
                "data: URIs (images pasted as text) are not accepted; save the image next "
                "to the prompt file and list its file name"
            )
        if scheme not in ("http", "https"):
            return (
                f"reference '{source}' uses {scheme}:, but only http:// and https:// web "
                "addresses or file names are accepted"
            )
        try:
            parts = urlsplit(source)
            host = parts.hostname
        except ValueError:
            host = None
        if not host or any(c.isspace() for c in source):
            return f"reference '{source}' is not a complete web address (it needs a host name)"
        return None
    if (
        source.startswith(("/", "\\", "~"))
        or PureWindowsPath(source).is_absolute()
        or PureWindowsPath(source).drive
    ):
        return (
            f"reference '{source}' is an absolute path; write it relative to this file's "
            "folder, like 'sketch.png'"
        )
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _resolve_reference(source: str, base: Path, root: Path) -> Reference | str:
    """Turn one reference into a Reference, or return what is wrong with it.

    `base` (the folder of the file that lists it) and `root` are resolved paths. A local file
    must stay inside the root both as written (no `..` out of it) and after following symlinks,
    be a regular file of at most 10 MB and decode as JPEG, PNG or WebP.
    """
    form = _reference_form_problem(source)
    if form:
        return form
    if _is_url_like(source):
        return Reference(source=source, kind="url", url=source)
    lexical = Path(os.path.normpath(base / source))
    if not _inside(lexical, root):
        return f"reference '{source}' points outside the watched folder; use images inside it"
    real = lexical.resolve()
    if not _inside(real, root):
        return (
            f"reference '{source}' is a link that leads outside the watched folder; copy "
            "the image into the folder instead"
        )
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return f"reference '{source}' was not found (looked for {lexical})"
    except OSError as exc:
        return f"reference '{source}' cannot be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"reference '{source}' is {_kind_of(st.st_mode)}, not an image file"
    if st.st_size > MAX_REFERENCE_BYTES:
        return (
            f"reference '{source}' is {_human(st.st_size)}; the API takes images up to "
            "10 MB. Make it smaller"
        )
    try:
        data = _read_bytes(real, MAX_REFERENCE_BYTES, "reference")
    except SpecError as exc:
        return f"reference '{source}': {exc.problems[0].message}"
    fmt = imaging.sniff(data)
    if fmt == "gif":
        return (
            f"reference '{source}' is a GIF image; the API takes only JPEG, PNG and WebP. "
            "Save it in one of those formats"
        )
    if fmt is None:
        return (
            f"reference '{source}' is not a JPEG, PNG or WebP image (whatever its name "
            "says); the API takes only those"
        )
    try:
        info = imaging.inspect(data)
    except imaging.ImageError:
        return (
            f"reference '{source}' looks like a {fmt.upper()} image but does not open; it "
            "may be damaged or still copying"
        )
    return Reference(
        source=source,
        kind="file",
        path=real,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        format=info.format,
    )


# --------------------------------------------------------------------------- defaults


@dataclass(frozen=True)
class _Layer:
    """One source of values (rule defaults, a .promptdrop.toml, the prompt file)."""

    values: dict[str, Any]
    base: Path  # folder its references are relative to (resolved)
    path: Path  # file reported in problems
    text: str


def _defaults_layer(path: Path, real: Path) -> tuple[_Layer | None, SpecError | None]:
    try:
        raw, text = _load(real, what="defaults file")
    except SpecError as exc:
        return None, SpecError(
            [Problem(path, p.message, p.line, p.col) for p in exc.problems], not_ready=exc.not_ready
        )
    obj, problems = _validate_table(FolderDefaults, raw, path, text, "defaults")
    problems += _reference_forms(raw.get("references"), path, text)
    if obj is None or problems:
        return None, SpecError(sorted(problems, key=_by_position))
    assert isinstance(obj, FolderDefaults)
    return _Layer(obj.model_dump(exclude_none=True), real.parent, path, text), None


def _reference_forms(
    refs: Any,
    path: Path,
    text: str,
    prefix: str = "",
    table: str | None = None,
    index: int | None = None,
) -> list[Problem]:
    if not isinstance(refs, list):
        return []
    line, col = _locate(text, "references", table, index)
    return [
        Problem(path, prefix + msg, line, col)
        for s in refs
        if isinstance(s, str)
        for msg in [_reference_form_problem(s)]
        if msg
    ]


def read_defaults(path: Path) -> FolderDefaults:
    """Read and check one `.promptdrop.toml`; raise SpecError with every problem found.

    References are checked for their form only (no absolute paths, no data: URIs, only http(s)
    web addresses); whether the files exist inside the watched folder is checked when a prompt
    file uses them, or by `check_defaults_file`.
    """
    path = Path(path)
    layer, err = _defaults_layer(path, path.absolute().resolve())
    if err is not None:
        raise err
    assert layer is not None
    return FolderDefaults.model_validate(layer.values)


def check_defaults_file(path: Path, root: Path) -> FolderDefaults:
    """Like `read_defaults`, and also resolve its local references against `root`."""
    defaults = read_defaults(path)
    base = Path(path).absolute().resolve().parent
    text = _decode(
        path, _read_bytes(Path(path).absolute().resolve(), MAX_PROMPT_FILE_BYTES, "defaults file")
    )
    line, col = _locate(text, "references")
    problems = [
        Problem(Path(path), r, line, col)
        for s in defaults.references or ()
        for r in [_resolve_reference(s, base, Path(root).absolute().resolve())]
        if isinstance(r, str)
    ]
    if problems:
        raise SpecError(problems)
    return defaults


# --------------------------------------------------------------------------- prompt files


def _check_inside_root(path: Path, root_real: Path, what: str) -> Path:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _fail(path, f"the {what} was not found") from None
    except OSError as exc:
        raise _fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    real = path.absolute().resolve()
    if not _inside(real, root_real):
        if stat.S_ISLNK(st.st_mode):
            raise _fail(
                path,
                f"the {what} is a link that leads outside the watched folder; "
                "copy the file into the folder instead",
            )
        raise _fail(path, f"the {what} is not inside the watched folder {root_real}")
    return real


def read_prompt_file(
    path: Path, root: Path, rule_defaults: FolderDefaults | None = None
) -> Request:
    """Read a prompt file and return its effective Request; raise SpecError (only) otherwise.

    Precedence, key by key: `rule_defaults` < each `.promptdrop.toml` from `root` down to the
    file's folder (nearest wins) < the prompt file. References are the exception to key-by-key
    merging of lists: the nearest list wins whole (the prompt's list replaces the defaults' list,
    a nearer defaults list replaces a farther one), so a prompt can drop a shared reference; each
    list is relative to the folder of the file that lists it (rule defaults: the root). `style`
    is appended to the prompt after a blank line; the sum must stay within 1000 characters.
    Whitespace around the prompt and the style is dropped first.
    Local references are read and hashed; every problem in every file involved is reported.
    """
    path = Path(path)
    root_abs = Path(root).absolute()
    root_real = root_abs.resolve()
    real = _check_inside_root(path, root_real, "prompt file")
    try:
        raw, text = _load(real, what="prompt file")
    except SpecError as exc:
        raise SpecError(
            [Problem(path, p.message, p.line, p.col) for p in exc.problems], not_ready=exc.not_ready
        ) from None

    layers: list[_Layer] = []
    errors: list[SpecError] = []
    if rule_defaults is not None:
        layers.append(_Layer(rule_defaults.model_dump(exclude_none=True), root_real, root_abs, ""))
    # The folder the file appears in (not a link's target): its references and defaults are
    # the ones the user sees next to it.
    folder_real = path.absolute().parent.resolve()
    rel_parts = folder_real.relative_to(root_real).parts if _inside(folder_real, root_real) else ()
    for depth in range(len(rel_parts) + 1):
        shown = root_abs.joinpath(*rel_parts[:depth]) / DEFAULTS_NAME
        candidate = root_real.joinpath(*rel_parts[:depth]) / DEFAULTS_NAME
        if not os.path.lexists(candidate):
            continue
        try:
            d_real = _check_inside_root(candidate, root_real, "defaults file")
        except SpecError as exc:
            errors.append(SpecError([Problem(shown, p.message) for p in exc.problems]))
            continue
        layer, err = _defaults_layer(shown, d_real)
        if err is not None:
            errors.append(err)
        elif layer is not None:
            layers.append(layer)

    obj, problems = _validate_table(PromptFile, raw, path, text, "prompt")
    problems += _reference_forms(raw.get("references"), path, text)
    own = _Layer(
        obj.model_dump(exclude_none=True) if obj is not None else {}, folder_real, path, text
    )
    raw_refs = raw.get("references")
    if obj is None and isinstance(raw_refs, list) and all(isinstance(r, str) for r in raw_refs):
        # Still look at the files it names, so one run reports every problem of the file.
        own.values["references"] = raw_refs
    references, more = _resolve_all([*layers, own], root_real)
    problems += more
    if obj is not None and not errors:
        request, more = _build([*layers, own], path, text, references)
        problems += more
        if request is not None and not problems:
            return request
    if problems:
        errors.append(SpecError(sorted(problems, key=_by_position)))
    all_problems = [p for e in errors for p in e.problems]
    raise SpecError(all_problems, not_ready=all(e.not_ready for e in errors))


def _resolve_all(
    layers: Sequence[_Layer], root_real: Path
) -> tuple[list[Reference], list[Problem]]:
    """Resolve the nearest references list (a list replaces farther lists whole)."""
    ref_layer = next((la for la in reversed(layers) if "references" in la.values), None)
    if ref_layer is None:
        return [], []
    references: list[Reference] = []
    problems: list[Problem] = []
    line, col = _locate(ref_layer.text, "references") if ref_layer.text else (None, None)
    # Rule defaults have no file of their own here: say where the reference came from.
    prefix = "" if ref_layer.text else "the rule's [rules.defaults]: "
    for source in ref_layer.values["references"]:
        if _reference_form_problem(source):
            continue  # already reported
        ref = _resolve_reference(source, ref_layer.base, root_real)
        if isinstance(ref, str):
            problems.append(Problem(ref_layer.path, prefix + ref, line, col))
        else:
            references.append(ref)
    return references, problems


def _build(
    layers: Sequence[_Layer], path: Path, text: str, references: Sequence[Reference]
) -> tuple[Request | None, list[Problem]]:
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer.values)
    problems: list[Problem] = []
    # Outer whitespace is formatting (multi-line TOML strings end in a newline), not content.
    prompt: str = values["prompt"].strip()
    style = (values.get("style") or "").strip()
    full = prompt + STYLE_SEPARATOR + style if style else prompt
    line, col = _locate(text, "prompt")
    if not prompt.strip() or len(full) > MAX_PROMPT_CHARS:
        problems.append(Problem(path, _prompt_length_message(prompt, style), line, col))
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


# --------------------------------------------------------------------------- rules files


def read_rules(path: Path) -> RulesFile:
    """Read and check a rules file; raise SpecError with every problem found.

    Relative rule paths are resolved against the rules file's folder after expanding `~`; the
    folders need not exist yet (the daemon reports a missing root). Rule names must be unique.
    """
    path = Path(path)
    raw, text = _load(path.absolute().resolve(), MAX_RULES_FILE_BYTES, "rules file")
    problems: list[Problem] = []
    top_allowed = ("api", "rules", "ledger")
    for key in raw:
        if key not in top_allowed:
            line, col = _locate_key(text, key, raw[key])
            problems.append(
                Problem(path, _unknown_key_message(key, top_allowed, "rules"), line, col)
            )
    api = ApiSettings()
    raw_api = raw.get("api", {})
    if not isinstance(raw_api, dict):
        line, col = _locate(text, "api")
        problems.append(Problem(path, _field_message("api", raw_api), line, col))
    else:
        obj, more = _validate_table(
            ApiSettings, raw_api, path, text, "api", table="api", prefix="[api] "
        )
        problems += more
        if isinstance(obj, ApiSettings):
            api = obj
            if api.base_url is not None:
                parts = urlsplit(api.base_url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    line, col = _locate(text, "base_url", "api")
                    problems.append(
                        Problem(
                            path, "[api] " + _field_message("base_url", api.base_url), line, col
                        )
                    )
    ledger = raw.get("ledger")
    if ledger is not None and not (
        isinstance(ledger, str) and ledger.split(":", 1)[0].lower() in ("postgresql", "postgres")
    ):
        line, col = _locate(text, "ledger")
        # The value is not repeated: it may hold a password.
        problems.append(
            Problem(
                path,
                "ledger must be a PostgreSQL URL in quotes, such as "
                '"postgresql://promptdrop@db.example.com/promptdrop"; leave it '
                "out to keep the ledger on this computer",
                line,
                col,
            )
        )
        ledger = None
    raw_rules = raw.get("rules")
    rules: list[RuleConfig] = []
    if raw_rules is None or raw_rules == []:
        problems.append(
            Problem(
                path, "there are no rules; add at least one [[rules]] table with a name and a path"
            )
        )
    elif not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        line, col = _locate(text, "rules")
        problems.append(Problem(path, _field_message("rules", raw_rules), line, col))
    else:
        base = path.absolute().parent
        names: set[str] = set()
        for i, raw_rule in enumerate(raw_rules):
            rule, more = _read_rule(raw_rule, i, base, path, text)
            problems += more
            if rule is None:
                continue
            if rule.name in names:
                line, col = _locate(text, "name", "rules", i)
                problems.append(
                    Problem(
                        path,
                        f"rule name '{rule.name}' is used twice; give each rule its own name",
                        line,
                        col,
                    )
                )
            names.add(rule.name)
            rules.append(rule)
    if problems:
        raise SpecError(sorted(problems, key=_by_position))
    return RulesFile(api=api, rules=rules, ledger=ledger)


def _read_rule(
    raw: dict[str, Any], i: int, base: Path, path: Path, text: str
) -> tuple[RuleConfig | None, list[Problem]]:
    name = raw.get("name")
    label = f"rule '{name}': " if isinstance(name, str) and name else f"rule {i + 1}: "
    obj, problems = _validate_table(
        RuleConfig,
        raw,
        path,
        text,
        "rule",
        table="rules",
        index=i,
        prefix=label,
        skip=("defaults",),
    )
    defaults: FolderDefaults | None = None
    raw_defaults = raw.get("defaults")
    if raw_defaults is not None:
        if not isinstance(raw_defaults, dict):
            line, col = _locate(text, "defaults", "rules", i)
            problems.append(
                Problem(path, label + _field_message("defaults", raw_defaults), line, col)
            )
        else:
            d, more = _validate_table(
                FolderDefaults,
                raw_defaults,
                path,
                text,
                "defaults",
                table="rules.defaults",
                index=i,
                prefix=label + "[rules.defaults] ",
            )
            problems += more
            problems += _reference_forms(
                raw_defaults.get("references"),
                path,
                text,
                label + "[rules.defaults] ",
                "rules.defaults",
                i,
            )
            if isinstance(d, FolderDefaults):
                defaults = d
    raw_path = raw.get("path")
    if isinstance(raw_path, str) and not raw_path.strip():
        line, col = _locate(text, "path", "rules", i)
        problems.append(
            Problem(path, label + "path is empty; write the folder to watch", line, col)
        )
    if obj is None or problems:
        return None, problems
    assert isinstance(obj, RuleConfig)
    folder = Path(os.path.normpath(base / Path(raw_path or "").expanduser()))
    return obj.model_copy(update={"path": folder, "defaults": defaults}), []


def rules_for_folders(folders: Sequence[Path]) -> RulesFile:
    """The `watch FOLDER…` short form: one rule per folder, all settings at their defaults.

    Names come from the folder's base name, made unique with "-2", "-3"…; paths are made
    absolute (~ expanded).
    """
    rules: list[RuleConfig] = []
    used: set[str] = set()
    for folder in folders:
        absolute = Path(os.path.normpath(Path(folder).expanduser().absolute()))
        stem = absolute.name or "root"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        rules.append(RuleConfig(name=name, path=absolute))
    return RulesFile(api=ApiSettings(), rules=rules)


# --------------------------------------------------------------------------- JSON Schema

_SCHEMA_MODELS: dict[str, tuple[type[BaseModel], str, str]] = {
    "prompt": (
        PromptFile,
        "promptdrop prompt file (NAME.prompt.toml)",
        "One image request: a prompt and its options. Unknown keys are errors.",
    ),
    "defaults": (
        FolderDefaults,
        f"promptdrop folder defaults ({DEFAULTS_NAME})",
        "Defaults for the prompt files in this folder and its subfolders; the nearest "
        "file wins key by key, and the prompt file always wins.",
    ),
    "rules": (RulesFile, "promptdrop rules file", "Which folders promptdrop watches and how."),
}


def _tidy(node: Any) -> Any:
    """Make pydantic's schema fit TOML: no nulls (TOML has none), no null defaults."""
    if isinstance(node, list):
        return [_tidy(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items()}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [x for x in any_of if x != {"type": "null"}]
        if len(rest) == 1:
            del out["anyOf"]
            out = {**rest[0], **out}
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def json_schema(kind: SchemaKind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a prompt file, a defaults file or a rules file.

    The committed copies under rules/*.schema.json must equal this; regenerate them with
    `promptdrop schema KIND > rules/KIND.schema.json`.
    """
    if kind not in _SCHEMA_MODELS:
        raise ValueError(f"unknown schema kind {kind!r}; use prompt, defaults or rules")
    model, title, description = _SCHEMA_MODELS[kind]
    schema = _tidy(model.model_json_schema())
    schema["title"] = title
    schema["description"] = description
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
