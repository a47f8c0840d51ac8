"""Log lines for people and for machines: the renderer row by row, the style chosen for each
stream, and `watch --once` on a real pseudo-terminal, where the progress bar and the log lines
never overwrite each other."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyte
import pytest

from harness import CANARY, CAPTURED, daemon_env, write_prompt
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.logs import Style, choose_style, is_journal, render_line, wants_color

CWD = "/home/ann"
PLAIN = Style()
STAMP = "2026-12-04 03:58:10"


@pytest.mark.parametrize(
    ("event", "line"),
    [
        # What was refused, why, and where the note is, in words.
        (
            {
                "event": "prompt file refused",
                "level": "warning",
                "timestamp": STAMP,
                "source": "/home/ann/drop/a.prompt.toml",
                "problem": 'size "5:4" is not offered',
                "note": "/home/ann/drop/a.error.txt",
            },
            f'{STAMP} warning prompt file refused: drop/a.prompt.toml: size "5:4" is not '
            "offered (note: drop/a.error.txt)",
        ),
        # Empty fields (the issue's `host=None task=None`) are left out; info has no level word.
        (
            {
                "event": "ledger opened",
                "level": "info",
                "timestamp": STAMP,
                "path": "/var/lib/promptdrop/ledger.sqlite3",
                "host": None,
                "task": None,
                "problems": [],
                "detail": "",
            },
            f"{STAMP} ledger opened: /var/lib/promptdrop/ledger.sqlite3",
        ),
        # The rest as key=value, quoted when it has spaces; lists joined by commas.
        (
            {
                "event": "submitted",
                "level": "info",
                "timestamp": STAMP,
                "source": "/home/ann/drop/b.prompt.toml",
                "job": 3,
                "task": "task_img_1",
                "outcome": "created",  # repeats the event's words
            },
            f"{STAMP} submitted: drop/b.prompt.toml  job=3 task=task_img_1",
        ),
        (
            {
                "event": "watching",
                "level": "info",
                "timestamp": STAMP,
                "roots": ["/home/ann/drop", "/srv/share"],
                "rule": "all rules",
            },
            f'{STAMP} watching  roots="drop, /srv/share" rule="all rules"',
        ),
        # A fix comes last, in words.
        (
            {
                "event": "submissions paused",
                "level": "error",
                "timestamp": STAMP,
                "reason": "the API key was refused",
                "retry_in": 60,
                "fix": "check TOAPIS_API_KEY",
            },
            f"{STAMP} error submissions paused: the API key was refused  retry_in=60; "
            "fix: check TOAPIS_API_KEY",
        ),
        # No time given (the journal's style): none shown.
        ({"event": "scan done", "level": "info", "prompt_files": 30}, "scan done  prompt_files=30"),
        # A path outside the working folder stays absolute; floats are short.
        (
            {"event": "retrying", "level": "debug", "source": "/srv/x.prompt.toml", "wait": 2.5},
            "debug retrying: /srv/x.prompt.toml  wait=2.5",
        ),
    ],
)
def test_render_line(event: dict[str, Any], line: str) -> None:
    assert render_line(event, PLAIN, cwd=CWD) == line


def test_a_traceback_follows_the_line_on_its_own_lines() -> None:
    event = {"event": "job stopped", "level": "error", "exception": "Traceback\n  boom\n"}
    assert render_line(event, PLAIN, cwd=CWD) == "error job stopped\nTraceback\n  boom"


def test_colour_marks_the_level_and_dims_the_details() -> None:
    event = {"event": "refused", "level": "warning", "timestamp": STAMP, "job": 1}
    line = render_line(event, Style(color=True), cwd=CWD)
    assert "\x1b[33mwarning\x1b[0m" in line and "\x1b[2mjob=1\x1b[0m" in line
    assert "\x1b[" not in render_line(event, PLAIN, cwd=CWD)


@pytest.mark.parametrize(
    ("level", "prefix"), [("info", "<6>"), ("warning", "<4>"), ("error", "<3>"), ("debug", "<7>")]
)
def test_journal_lines_carry_the_syslog_priority_and_no_time(level: str, prefix: str) -> None:
    event = {"event": "scan done", "level": level, "timestamp": STAMP}
    line = render_line(event, Style(timestamps=False, journal=True), cwd=CWD)
    assert line.startswith(prefix + ("" if level == "info" else level + " ") + "scan done")
    assert STAMP not in line


@pytest.mark.parametrize(
    ("json_flag", "tty", "journal", "env", "style"),
    [
        (None, True, False, {"TERM": "xterm"}, Style(color=True)),  # a terminal
        (None, True, False, {"NO_COLOR": "1"}, Style(color=False)),  # no-color.org
        (None, True, False, {"TERM": "dumb"}, Style(color=False)),
        (None, True, False, {"NO_COLOR": ""}, Style(color=True)),  # set but empty: ignored
        (None, False, False, {}, Style(json=True)),  # a pipe or a file
        (None, False, True, {}, Style(timestamps=False, journal=True)),  # the journal
        (True, True, False, {}, Style(json=True)),  # --log-format json
        (True, False, True, {}, Style(json=True)),
        (False, False, False, {}, Style(color=False)),  # --log-format console into a file
        (False, False, True, {}, Style(timestamps=False, journal=True)),
    ],
)
def test_choose_style(
    json_flag: bool | None, tty: bool, journal: bool, env: dict[str, str], style: Style
) -> None:
    assert choose_style(json_flag, tty=tty, journal=journal, environ=env) == style


@pytest.mark.parametrize(
    ("variable", "device", "journal"),
    [
        ("8:1234", (8, 1234), True),
        ("8:1234", (8, 999), False),  # stderr was redirected away from the journal
        (None, (8, 1234), False),
        ("", (8, 1234), False),
        ("garbage", (8, 1234), False),
        ("8:1234", None, False),
    ],
)
def test_is_journal(variable: str | None, device: tuple[int, int] | None, journal: bool) -> None:
    assert is_journal(variable, device) is journal


def test_wants_color() -> None:
    assert wants_color({}) and not wants_color({"NO_COLOR": "x"})


# Real runs --------------------------------------------------------------------------------

TIME = re.compile(r"^(\x1b\[[0-9;]*m)*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
BAR = re.compile(r"\d+%\|")
COLUMNS, ROWS = 1000, 400  # wide enough that no log line wraps, tall enough that none scrolls


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(api_key=CANARY, latency=0.3, jitter=0.2, rate_limits=None)) as e:
        yield e


def _thirty_files(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    for i in range(30):
        write_prompt(folder / f"p{i:02}.prompt.toml", f"picture number {i}")
    write_prompt(folder / "bad.prompt.toml", "bad", size="5:4")
    return folder


def _run_in_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes]:
    """Run promptdrop with stdin, stdout and stderr on a new pseudo-terminal; its exit code and
    every byte it wrote to the terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptdrop", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError as exc:  # EIO: the terminal's last writer closed it
            if exc.errno != errno.EIO:
                raise
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=120)
    out = b"".join(chunks)
    CAPTURED.append((f"promptdrop {' '.join(args)} (terminal)", out.decode(errors="replace")))
    return code, out


def _screen(output: bytes) -> list[str]:
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n") if b"\r\n" not in output else output)
    return [line.rstrip() for line in screen.display if line.strip()]


def test_watch_once_on_thirty_files_keeps_the_bar_and_the_log_lines_apart(
    emu: Emulator, tmp_path: Path
) -> None:
    _thirty_files(tmp_path)
    env = daemon_env(emu.base_url, extra={"TERM": "xterm-256color"})
    env.pop("NO_COLOR", None)
    args = ["watch", "--once", "drop", "--state-dir", "state", "--poll-interval", "0.1"]
    code, output = _run_in_a_terminal(args, env, tmp_path)
    assert code == 1  # the bad file
    lines = _screen(output)
    bars = [line for line in lines if BAR.search(line)]
    logs = [line for line in lines if TIME.match(line)]
    # Every line on the screen is either a whole log line or the bar, never both, never a
    # piece of one glued to the other (the issue: "…image/s]2" then "026-12-02T16:44:27…").
    glued = [line for line in lines if (line in bars) == (line in logs)]
    assert glued == [], "\n".join(glued)
    assert len(bars) == 1 and bars[0].startswith("100%|") and "31/31" in bars[0]
    assert lines[-1] == bars[0]  # the bar stays below the log
    assert sum(" done: drop/p" in line for line in logs) == 30
    refused = [line for line in logs if "prompt file refused" in line]
    assert len(refused) == 1
    assert re.search(
        r'warning prompt file refused: drop/bad\.prompt\.toml: size "5:4" is not .*'
        r"\(note: drop/bad\.error\.txt\)$",
        refused[0],
    ), refused[0]
    assert "None" not in "\n".join(logs)
    assert b"\x1b[33mwarning" in output  # colour on a terminal


def test_no_color_on_a_terminal_means_no_colour(emu: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    write_prompt(folder / "bad.prompt.toml", "bad", size="5:4")
    env = daemon_env(emu.base_url, extra={"TERM": "xterm-256color", "NO_COLOR": "1"})
    code, output = _run_in_a_terminal(
        ["watch", "--once", "drop", "--state-dir", "s"], env, tmp_path
    )
    assert code == 1
    assert b"prompt file refused" in output
    assert re.search(rb"\x1b\[[0-9;]*m", output) is None


def _once_into(stderr: Path, env: dict[str, str], cwd: Path) -> int:
    with stderr.open("wb") as err:
        return subprocess.run(
            [sys.executable, "-m", "promptdrop", "watch", "--once", "drop", "--state-dir", "s"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            timeout=60,
            check=False,
        ).returncode


def test_the_journal_gets_plain_lines_with_priorities_and_no_time(
    emu: Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    write_prompt(folder / "bad.prompt.toml", "bad", size="5:4")
    stderr = tmp_path / "journal.err"
    stderr.touch()
    st = stderr.stat()
    env = daemon_env(emu.base_url, extra={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert _once_into(stderr, env, tmp_path) == 1
    text = stderr.read_text()
    CAPTURED.append(("watch --once (journal)", text))
    lines = text.splitlines()
    assert any(
        line.startswith("<4>warning prompt file refused: drop/bad.prompt.toml: ") for line in lines
    )
    assert all(re.match(r"<\d>", line) for line in lines), text
    assert re.search(r"\d\d:\d\d:\d\d", text) is None and "{" not in text


def test_a_pipe_gets_json_lines_without_empty_fields(emu: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    write_prompt(folder / "ok.prompt.toml", "fine")
    stderr = tmp_path / "pipe.err"
    env = daemon_env(emu.base_url)
    env.pop("JOURNAL_STREAM", None)
    assert _once_into(stderr, env, tmp_path) == 0
    text = stderr.read_text()
    CAPTURED.append(("watch --once (file)", text))
    events = [json.loads(line) for line in text.splitlines()]
    assert {"event", "level", "timestamp"} <= set(events[0])
    assert [e for e in events if None in e.values() or "" in e.values()] == []
    assert any(e["event"] == "done" for e in events)
