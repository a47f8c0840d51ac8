"""Logging: readable lines for people, JSON lines for machines, secrets masked.

Three styles, chosen by `choose_style` from where the lines go:
- a terminal: local time to the second, then one line per event that says what happened, to
  which file, and why ("prompt file refused: drop/a.prompt.toml: size "5:4" is not one of …
  (note: drop/a.error.txt)"), in colour unless NO_COLOR is set or TERM is dumb;
- the journal (stderr is the stream systemd's JOURNAL_STREAM names): the same lines without the
  time, which the journal adds itself, each with its syslog priority prefix ("<4>");
- anything else (a pipe, a file) or `--log-format json`: one JSON object per line, UTC times.

Fields without a value (None, "", [], {}) are left out of every style. `render_line` is the
terminal and journal renderer as a pure function (an event dict in, a line out).

While a progress bar is on the terminal (`around_bars`), each line is written through tqdm,
which lifts the bar, prints the line, and draws the bar again below it: neither overwrites the
other.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

_SECRETS: set[str] = set()
MASK = "[redacted]"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # local time, to the second

# The field that names what an event is about (the first present), and the one that says why.
_SUBJECTS = ("source", "path", "file", "root", "folder")
_REASONS = ("problem", "problems", "detail", "error", "reason", "message")
# Fields that repeat the event's own words on a terminal (kept in JSON).
_HIDDEN = ("outcome",)
_LEVEL_COLORS = {"debug": "2", "warning": "33", "error": "31", "critical": "1;31"}
_SYSLOG = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def register_secret(value: str) -> None:
    """Mask `value` wherever it would appear in a log line (a last line of defence)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    return value


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = _mask(value)
    return event


def _drop_empty(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _empty(value):
            del event[key]
    return event


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, dict, set)) and not value)


# Choosing a style -------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    json: bool = False
    timestamps: bool = True
    color: bool = False
    journal: bool = False  # syslog priority prefixes, for the journal


def wants_color(environ: Mapping[str, str]) -> bool:
    """Whether a terminal may get colour: not with NO_COLOR set (no-color.org), nor TERM=dumb."""
    return not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def is_journal(journal_stream: str | None, device: tuple[int, int] | None) -> bool:
    """Whether a stream whose (st_dev, st_ino) is `device` is the journal systemd connected:
    JOURNAL_STREAM holds "DEV:INODE" of it (a child whose stderr was redirected is not)."""
    if not journal_stream or device is None:
        return False
    dev, _, ino = journal_stream.partition(":")
    try:
        return (int(dev), int(ino)) == device
    except ValueError:
        return False


def choose_style(
    json: bool | None, *, tty: bool, journal: bool, environ: Mapping[str, str]
) -> Style:
    """The style for a stream: `json` True/False is --log-format json/console, None is auto
    (the journal's lines, a terminal's, else JSON)."""
    if json:
        return Style(json=True)
    if journal:
        return Style(timestamps=False, journal=True)
    if json is None and not tty:
        return Style(json=True)
    return Style(color=tty and wants_color(environ))


def _device(stream: TextIO) -> tuple[int, int] | None:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_dev, st.st_ino


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


# Rendering --------------------------------------------------------------------------------


def render_line(event: Mapping[str, Any], style: Style = Style(), cwd: str | None = None) -> str:
    """One event as a line for people: "TIME [LEVEL] what: which file: why (note: …); fix: …
    key=value …". Paths under `cwd` are shown relative to it; empty fields are left out;
    a traceback (`exception`) follows on its own lines."""
    fields = {k: v for k, v in event.items() if not _empty(v)}
    level = str(fields.pop("level", "info")).lower()
    stamp = fields.pop("timestamp", None)
    what = str(fields.pop("event", ""))
    trace = fields.pop("exception", None)
    for key in _HIDDEN:
        fields.pop(key, None)
    here = os.getcwd() if cwd is None else cwd

    text = what
    subject = next((k for k in _SUBJECTS if k in fields), None)
    if subject is not None:
        text += ": " + _shown(fields.pop(subject), here)
    reason = next((k for k in _REASONS if k in fields), None)
    if reason is not None:
        text += ": " + _shown(fields.pop(reason), here)
    if "note" in fields:
        text += f" (note: {_shown(fields.pop('note'), here)})"
    fix = fields.pop("fix", None)
    rest = " ".join(f"{k}={_value(v, here)}" for k, v in fields.items())
    if rest:
        text += "  " + (_paint(rest, "2") if style.color else rest)
    if fix is not None:
        text += f"; fix: {_shown(fix, here)}"

    head = []
    if style.timestamps and stamp is not None:
        head.append(_paint(str(stamp), "2") if style.color else str(stamp))
    if level != "info":
        color = _LEVEL_COLORS.get(level)
        head.append(_paint(level, color) if style.color and color else level)
    line = " ".join([*head, text])
    if style.journal:
        line = f"<{_SYSLOG.get(level, 6)}>{line}"
    if trace:
        line += "\n" + str(trace).rstrip("\n")
    return line


def _paint(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


def _shown(value: Any, cwd: str) -> str:
    """A value in words: lists joined by commas, paths under `cwd` made relative."""
    if isinstance(value, (list, tuple, set)):
        return ", ".join(_shown(v, cwd) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if cwd and text.startswith(cwd.rstrip("/") + "/"):
        return text[len(cwd.rstrip("/")) + 1 :]
    return text


def _value(value: Any, cwd: str) -> str:
    text = _shown(value, cwd) if not isinstance(value, dict) else jsonlib.dumps(value)
    if not text or any(c.isspace() for c in text) or "=" in text:
        return jsonlib.dumps(text, ensure_ascii=False)
    return text


class _LineRenderer:
    def __init__(self, style: Style) -> None:
        self.style = style

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        return render_line(event, self.style)


# Where the lines go -----------------------------------------------------------------------


class _Sink:
    """The log's stream; while a progress bar is shown, lines go through tqdm.write so the bar
    is lifted for them and drawn again below."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bars = 0

    def write(self, text: str) -> int:
        if self.bars:
            from tqdm import tqdm  # type: ignore[import-untyped]

            tqdm.write(text.rstrip("\n"), file=self.stream)
        else:
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


_sink: _Sink | None = None


@contextlib.contextmanager
def around_bars() -> Iterator[None]:
    """While inside, log lines make room for tqdm progress bars on the same terminal."""
    sink = _sink
    if sink is not None:
        sink.bars += 1
    try:
        yield
    finally:
        if sink is not None:
            sink.bars -= 1


def configure(
    *,
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> Style:
    """Set up structlog for this process (see the module docstring for the styles); `json`
    None chooses by the stream. Returns the style chosen."""
    global _sink
    out = stream or sys.stderr
    env = os.environ if environ is None else environ
    style = choose_style(
        json,
        tty=_isatty(out),
        journal=is_journal(env.get("JOURNAL_STREAM"), _device(out)),
        environ=env,
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if style.json:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    elif style.timestamps:
        processors.append(structlog.processors.TimeStamper(fmt=TIME_FORMAT, utc=False))
    processors += [structlog.processors.format_exc_info, _drop_empty, _redact]
    renderer: Any = structlog.processors.JSONRenderer() if style.json else _LineRenderer(style)
    _sink = _Sink(out)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=_sink),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    return style
