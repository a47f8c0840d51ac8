"""Every subcommand over a table of hostile arguments and environments, each run as the real
`python -m promptdrop` subprocess: bad API addresses, files where folders belong and the other
way round, /proc, named pipes, a damaged ledger, huge and non-finite numbers, unicode, empty
strings, a taken port, and a stdout whose reader has gone (`| head -1`).

Each case states the exit code (1 for a failure, 2 for usage and for what to fix before the
daemon can start) and the words the one-line message must hold. No output may hold a
traceback or the API key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import CANARY, CAPTURED, cli, daemon_env, image_for, wait_for, write_prompt
from promptdrop.commands.failure import EXIT_CLOSED_PIPE, internal_error_line, masked
from promptdrop.commands.status import outputs_text
from promptdrop.emulator import Emulator
from promptdrop.emulator.cli import faults_from_json, ports_problem
from promptdrop.ledger import Ledger
from promptdrop.service.config import base_url_problem, root_refusal
from promptdrop.spec import rules_for_folders

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, a refusal comes at once


@dataclass(frozen=True)
class Case:
    """One command line. `{w}` in args and env stands for the world's folder, `{port}` for a
    port that something else holds."""

    id: str
    args: tuple[str, ...]
    code: int
    words: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    stream: str = "err"  # where the message goes: "err" or "out"
    lines: int | None = 1  # the most lines the message may take (None: a table, or usage)
    setup: Callable[[Path], None] | None = None


def _broken_prompt_in_demo(w: Path) -> None:
    demo = w / "demo-again"
    first = cli("demo", str(demo), env=_env(w), cwd=w, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    (demo / "poster.prompt.toml").write_text("prompt = \n", encoding="utf-8")


def _rules(name: str, body: str) -> Callable[[Path], None]:
    def write(w: Path) -> None:
        (w / name).write_text(body.replace("{w}", str(w)), encoding="utf-8")

    return write


def _huge_prompt(w: Path) -> None:
    with (w / "huge.prompt.toml").open("wb") as f:
        f.truncate(2**31)  # sparse: 2 GiB that take no disk


E = "err"
OUT = "out"
CASES = [
    # --- the API address ---------------------------------------------------------------------
    Case(
        "base-url-without-scheme",
        ("watch", "{w}/drop", "--once"),
        2,
        ("TOAPIS_BASE_URL", "http://127.0.0.1:18787?", "such as https://toapis.com"),
        env={"TOAPIS_BASE_URL": "127.0.0.1:18787"},
    ),
    Case(
        "base-url-ftp",
        ("watch", "{w}/drop", "--once"),
        2,
        ("TOAPIS_BASE_URL must be an http:// or https:// address", "'ftp://x'"),
        env={"TOAPIS_BASE_URL": "ftp://x"},
    ),
    Case(
        "base-url-port-too-big",
        ("watch", "{w}/drop", "--once"),
        2,
        ("TOAPIS_BASE_URL",),
        env={"TOAPIS_BASE_URL": "http://127.0.0.1:99999"},
    ),
    Case(
        "base-url-no-host",
        ("watch", "{w}/drop", "--once"),
        2,
        ("TOAPIS_BASE_URL", "'http://'"),
        env={"TOAPIS_BASE_URL": "http://"},
    ),
    Case(
        "base-url-unicode",
        ("watch", "{w}/drop", "--once"),
        2,
        ("TOAPIS_BASE_URL", "ünï ☃"),
        env={"TOAPIS_BASE_URL": "ünï ☃"},
    ),
    Case(
        "doctor-blames-the-address-not-the-key",
        ("doctor", "{w}/drop"),
        1,
        ("API address", "TOAPIS_BASE_URL", "not checked: the API address is unusable"),
        env={"TOAPIS_BASE_URL": "ftp://x"},
        stream=OUT,
        lines=None,
    ),
    Case(
        "rules-base-url-ftp",
        ("watch", "--rules", "{w}/ftp.rules.toml", "--once"),
        2,
        ("[api] base_url",),
        setup=_rules(
            "ftp.rules.toml", '[api]\nbase_url = "ftp://x"\n[[rules]]\nname = "d"\npath = "drop"\n'
        ),
        lines=None,
    ),
    Case(
        "doctor-rules-base-url-ftp",
        ("doctor", "--rules", "{w}/ftp.rules.toml"),
        1,
        ("base_url",),
        setup=_rules(
            "ftp.rules.toml", '[api]\nbase_url = "ftp://x"\n[[rules]]\nname = "d"\npath = "drop"\n'
        ),
        stream=OUT,
        lines=None,
    ),
    # --- the state folder ----------------------------------------------------------------------
    Case(
        "state-dir-is-a-file",
        ("watch", "{w}/drop", "--once", "--state-dir", "{w}/afile"),
        2,
        ("the state folder", "afile is a file, not a folder", "--state-dir"),
    ),
    Case(
        "state-dir-inside-a-file",
        ("watch", "{w}/drop", "--once", "--state-dir", "{w}/afile/sub"),
        2,
        ("part of its path is a file",),
    ),
    Case(
        "state-dir-in-proc",
        ("watch", "{w}/drop", "--once", "--state-dir", "/proc/promptdrop"),
        2,
        ("cannot use the state folder /proc/promptdrop",),
    ),
    Case(
        "state-dir-variable-is-a-file",
        ("watch", "{w}/drop", "--once"),
        2,
        ("is a file, not a folder", "PROMPTDROP_STATE_DIR"),
        env={"PROMPTDROP_STATE_DIR": "{w}/afile"},
    ),
    Case(
        "state-dir-is-a-fifo",
        ("watch", "{w}/drop", "--once", "--state-dir", "{w}/fifo"),
        2,
        ("is a file, not a folder",),
    ),
    Case("state-dir-empty", ("watch", "{w}/drop", "--state-dir", ""), 2, ("--state-dir is empty",)),
    Case(
        "damaged-ledger-watch",
        ("watch", "{w}/drop", "--once", "--state-dir", "{w}/damaged"),
        2,
        ("is damaged or not a promptdrop ledger", "restore it from a backup"),
    ),
    Case(
        "damaged-ledger-status",
        ("status", "--state-dir", "{w}/damaged"),
        1,
        ("is damaged or not a promptdrop ledger",),
    ),
    Case(
        "status-without-ledger",
        ("status", "--state-dir", "{w}/afile"),
        1,
        ("no ledger yet",),
    ),
    Case("status-rules-fifo", ("status", "--rules", "{w}/fifo"), 1, ("named pipe",), lines=2),
    Case(
        "status-postgres-refused-password-hidden",
        ("status", "--ledger", "postgresql://u:hunter2pw@127.0.0.1:9/db"),
        1,
        ("cannot open the shared ledger",),
    ),
    # --- metrics -------------------------------------------------------------------------------
    Case(
        "metrics-port-taken",
        ("watch", "{w}/drop", "--once", "--metrics", "127.0.0.1:{port}"),
        2,
        ("cannot show metrics at 127.0.0.1:", "choose another address or port"),
    ),
    Case(
        "metrics-port-too-big",
        ("watch", "{w}/drop", "--once", "--metrics", "127.0.0.1:99999"),
        2,
        ("--metrics", "from 1 to 65535"),
    ),
    Case(
        "metrics-no-port",
        ("watch", "{w}/drop", "--once", "--metrics", "nonsense"),
        2,
        ("has no port",),
    ),
    Case(
        "metrics-not-here",
        ("watch", "{w}/drop", "--once", "--metrics", "192.0.2.1:9464"),
        2,
        ("cannot show metrics at 192.0.2.1:9464",),
    ),
    Case("metrics-empty", ("watch", "{w}/drop", "--metrics", ""), 2, ("--metrics is empty",)),
    # --- numbers -------------------------------------------------------------------------------
    Case(
        "poll-interval-nan",
        ("watch", "{w}/drop", "--once", "--poll-interval", "nan"),
        2,
        ("--poll-interval must be a number of seconds above 0",),
    ),
    Case(
        "poll-interval-negative",
        ("watch", "{w}/drop", "--once", "--poll-interval", "-1"),
        2,
        ("--poll-interval", "it is -1"),
    ),
    Case(
        "poll-interval-huge",
        ("watch", "{w}/drop", "--once", "--poll-interval", "1e309"),
        2,
        ("--poll-interval", "it is inf"),
    ),
    Case(
        "poll-interval-words",
        ("watch", "{w}/drop", "--poll-interval", "soon"),
        2,
        ("invalid float value",),
        lines=None,
    ),
    Case(
        "lease-time-zero",
        ("watch", "{w}/drop", "--once", "--lease-time", "0"),
        2,
        ("--lease-time must be",),
    ),
    Case(
        "ledger-not-postgres",
        ("watch", "{w}/drop", "--once", "--ledger", "mysql://x"),
        2,
        ("must be a PostgreSQL URL",),
    ),
    # --- the emulator --------------------------------------------------------------------------
    Case("emulator-port-99999", ("emulator", "--port", "99999"), 2, ("--port must be from 0",)),
    Case("emulator-port-65535", ("emulator", "--port", "65535"), 2, ("PORT+1 = 65536",)),
    Case("emulator-port-negative", ("emulator", "--port", "-1"), 2, ("not -1",)),
    Case(
        "emulator-files-port-70000",
        ("emulator", "--port", "0", "--files-port", "70000"),
        2,
        ("--files-port must be from 0 to 65535",),
    ),
    Case("emulator-port-words", ("emulator", "--port", "abc"), 2, ("invalid int",), lines=None),
    Case(
        "emulator-faults-list",
        ("emulator", "--faults", "[1]"),
        2,
        ("--faults must be a JSON object", "it is a list"),
    ),
    Case("emulator-faults-null", ("emulator", "--faults", "null"), 2, ("JSON object",)),
    Case("emulator-faults-broken", ("emulator", "--faults", "{"), 2, ("not valid JSON",)),
    Case("emulator-faults-unknown", ("emulator", "--faults", '{"nope": 1}'), 2, ("unknown fault",)),
    Case("emulator-faults-rate", ("emulator", "--faults", '{"error_503": 5}'), 2, ("from 0 to 1",)),
    Case(
        "emulator-faults-endpoints",
        ("emulator", "--faults", '{"endpoints": 5}'),
        2,
        ("endpoints must be a list",),
    ),
    Case(
        "emulator-latency-nan",
        ("emulator", "--port", "0", "--latency", "nan"),
        2,
        ("--latency must be a number of seconds",),
    ),
    Case(
        "emulator-address-not-here",
        ("emulator", "--host", "192.0.2.1", "--port", "0"),
        1,
        ("cannot listen on 192.0.2.1",),
    ),
    # --- demo ----------------------------------------------------------------------------------
    Case(
        "demo-under-a-file",
        ("demo", "{w}/afile/demo"),
        1,
        ("cannot put the examples in", "part of that path is a file"),
    ),
    Case("demo-under-proc", ("demo", "/proc/promptdrop-demo"), 1, ("cannot put the examples",)),
    Case(
        "demo-state-dir-a-file",
        ("demo", "{w}/demo-x", "--state-dir", "{w}/afile"),
        1,
        ("is a file, not a folder",),
    ),
    Case("demo-empty", ("demo", ""), 2, ("FOLDER is empty",)),
    Case(
        "demo-rerun-after-breaking-an-example",
        ("demo", "{w}/demo-again"),
        1,
        ("images in", "1 prompt file made no image", "poster.prompt.toml", "not valid TOML"),
        setup=_broken_prompt_in_demo,
        stream=OUT,
        lines=None,
    ),
    # --- retry ---------------------------------------------------------------------------------
    Case(
        "retry-a-path-that-does-not-exist",
        ("retry", "{w}/drop/nothere.prompt.toml", "--state-dir", "{w}/state"),
        1,
        ("nothere.prompt.toml does not exist",),
    ),
    Case(
        "retry-a-folder-without-jobs",
        ("retry", "{w}/drop", "--state-dir", "{w}/state"),
        1,
        ("knows no prompt file under", "nothing was queued"),
    ),
    Case(
        "retry-a-prompt-file-without-jobs",
        ("retry", "{w}/drop/a.prompt.toml", "--state-dir", "{w}/state"),
        1,
        ("knows nothing of",),
    ),
    Case(
        "retry-not-a-prompt-file",
        ("retry", "{w}/afile", "--state-dir", "{w}/state"),
        1,
        ("is not a prompt file",),
    ),
    Case(
        "retry-without-ledger",
        ("retry", "{w}/drop", "--state-dir", "{w}/nostate"),
        1,
        ("no ledger yet",),
    ),
    Case(
        "retry-damaged-ledger",
        ("retry", "{w}/drop", "--state-dir", "{w}/damaged"),
        1,
        ("damaged",),
    ),
    Case("retry-empty", ("retry", ""), 2, ("PATH is empty",)),
    # --- the API key ---------------------------------------------------------------------------
    Case(
        "key-file-empty",
        ("watch", "{w}/drop", "--once", "--api-key-file", "{w}/empty.key"),
        2,
        ("the API key file", "empty.key is empty"),
        env={"TOAPIS_API_KEY": ""},
    ),
    Case(
        "key-file-empty-is-no-fallback",
        ("watch", "{w}/drop", "--once", "--api-key-file", "{w}/empty.key"),
        2,
        ("empty.key is empty",),
    ),
    Case(
        "key-file-dev-zero",
        ("watch", "{w}/drop", "--once", "--api-key-file", "/dev/zero"),
        2,
        ("too large",),
    ),
    Case(
        "key-file-binary",
        ("watch", "{w}/drop", "--once", "--api-key-file", "{w}/binary.key"),
        2,
        ("is not text",),
    ),
    Case(
        "key-file-missing",
        ("watch", "{w}/drop", "--once", "--api-key-file", "{w}/nothere.key"),
        2,
        ("cannot read the API key file",),
    ),
    Case(
        "key-file-a-folder",
        ("watch", "{w}/drop", "--once", "--api-key-file", "{w}/drop"),
        2,
        ("Is a directory",),
    ),
    Case(
        "key-file-a-fifo-nobody-writes",
        ("watch", "{w}/drop", "--once", "--api-key-file", "{w}/fifo"),
        2,
        ("fifo is empty",),
    ),
    Case(
        "doctor-key-file-empty",
        ("doctor", "--api-key-file", "{w}/empty.key"),
        1,
        ("is empty",),
        stream=OUT,
        lines=None,
    ),
    Case(
        "no-key",
        ("watch", "{w}/drop", "--once"),
        2,
        ("no API key", "promptdrop demo"),
        env={"TOAPIS_API_KEY": ""},
    ),
    # --- what watch watches --------------------------------------------------------------------
    Case(
        "watch-a-file",
        ("watch", "{w}/drop/a.prompt.toml"),
        2,
        ("is a file, not a folder", "promptdrop check"),
    ),
    Case(
        "watch-rules-root-a-file",
        ("watch", "--rules", "{w}/rootfile.rules.toml"),
        2,
        ("afile is a file, not a folder (rule 'f')",),
        setup=_rules("rootfile.rules.toml", '[[rules]]\nname = "f"\npath = "{w}/afile"\n'),
    ),
    Case("watch-nothere", ("watch", "{w}/nothere"), 2, ("does not exist", "mkdir -p")),
    Case("watch-empty", ("watch", ""), 2, ("FOLDER is empty",)),
    Case("watch-nothing", ("watch",), 2, ("name a folder to watch",)),
    Case(
        "watch-rules-missing-folder-once",
        ("watch", "--rules", "{w}/later.rules.toml", "--once"),
        2,
        ("does not exist", "--once", "run without --once to wait for it"),
        setup=_rules("later.rules.toml", '[[rules]]\nname = "later"\npath = "{w}/later"\n'),
    ),
    Case("watch-rules-a-fifo", ("watch", "--rules", "{w}/fifo", "--once"), 2, ("a named pipe",)),
    Case("watch-rules-dev-zero", ("watch", "--rules", "/dev/zero"), 2, ("a device",)),
    Case("watch-rules-a-folder", ("watch", "--rules", "{w}/drop"), 2, ("is a folder",)),
    Case("watch-rules-missing", ("watch", "--rules", "{w}/no.toml"), 2, ("was not found",)),
    Case(
        "watch-rules-unicode-missing-folder-once",
        ("watch", "--rules", "{w}/ünï.rules.toml", "--once"),
        2,
        ("☃ 日本", "does not exist"),
        setup=_rules("ünï.rules.toml", '[[rules]]\nname = "u"\npath = "{w}/☃ 日本"\n'),
    ),
    # --- check ---------------------------------------------------------------------------------
    Case(
        "check-an-empty-folder",
        ("check", "{w}/emptyd"),
        1,
        ("holds no prompt files", "nothing was checked"),
        stream=OUT,
    ),
    Case(
        "check-near-misses",
        ("check", "{w}/near"),
        1,
        ("poster.toml", "ends in .prompt.toml"),
        stream=OUT,
    ),
    Case("check-nothere", ("check", "{w}/nothere"), 2, ("no such file or folder",), stream=OUT),
    Case("check-a-fifo", ("check", "{w}/fifo"), 2, ("is not a prompt file",), stream=OUT),
    Case(
        "check-a-fifo-prompt-file",
        ("check", "{w}/pipe.prompt.toml"),
        1,
        ("a named pipe",),
        stream=OUT,
        lines=2,
    ),
    Case("check-proc", ("check", "/proc/self/status"), 2, ("is not a prompt file",), stream=OUT),
    Case("check-empty", ("check", ""), 2, ("PATH is empty",)),
    Case(
        "check-huge-file",
        ("check", "{w}/huge.prompt.toml"),
        1,
        ("may be at most",),
        setup=_huge_prompt,
        stream=OUT,
        lines=2,
    ),
    Case(
        "check-unicode-name",
        ("check", "{w}/ünï ☃.prompt.toml"),
        1,
        ("ünï ☃.prompt.toml", "prompt"),
        setup=_rules("ünï ☃.prompt.toml", 'prompt = ""\n'),
        stream=OUT,
        lines=2,
    ),
    Case("check-valid", ("check", "{w}/drop"), 0, ("all valid",), stream=OUT),
    # --- usage ---------------------------------------------------------------------------------
    Case("schema-unknown", ("schema", "nope"), 2, ("invalid choice",), lines=None),
    Case("unknown-command", ("nosuchcommand",), 2, ("invalid choice",), lines=None),
    Case(
        "doctor-missing-folder",
        ("doctor", "{w}/nothere"),
        1,
        ("does not exist",),
        stream=OUT,
        lines=None,
    ),
    Case(
        "doctor-rules-fifo",
        ("doctor", "--rules", "{w}/fifo"),
        1,
        ("named pipe",),
        stream=OUT,
        lines=None,
    ),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder the cases run in: a drop folder with one good prompt file, a regular file,
    named pipes, empty and misnamed folders, key files, a damaged ledger and a real one."""
    w = tmp_path_factory.mktemp("hostile")
    _mkdir(w / "drop")
    write_prompt(w / "drop" / "a.prompt.toml", "a cat")
    (w / "afile").write_text("not a folder\n", encoding="utf-8")
    os.mkfifo(w / "fifo")
    os.mkfifo(w / "pipe.prompt.toml")
    _mkdir(w / "emptyd")
    _mkdir(w / "near")
    (w / "near" / "poster.toml").write_text('prompt = "x"\n', encoding="utf-8")
    (w / "empty.key").write_text("\n", encoding="utf-8")
    (w / "binary.key").write_bytes(b"\xff\xfe\x00key")
    _mkdir(w / "damaged")
    (w / "damaged" / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    Ledger.open(w / "state").close()
    yield w


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _env(w: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = daemon_env(NOWHERE, extra={"PROMPTDROP_STATE_DIR": str(w / "state")})
    for name, value in (extra or {}).items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


def _fill(text: str, w: Path, port: int) -> str:
    return text.replace("{w}", str(w)).replace("{port}", str(port))


def _message_lines(text: str) -> list[str]:
    """The lines of an output that are not JSON log lines and not blank."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("{")]


def test_the_table_has_every_finding_and_sixty_cases() -> None:
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES) >= 60
    for finding in (
        "base-url-without-scheme",
        "base-url-ftp",
        "doctor-blames-the-address-not-the-key",
        "state-dir-is-a-file",
        "metrics-port-taken",
        "emulator-port-99999",
        "emulator-port-65535",
        "demo-under-a-file",
        "demo-under-proc",
        "retry-a-path-that-does-not-exist",
        "key-file-empty",
        "watch-a-file",
        "watch-rules-missing-folder-once",
        "check-an-empty-folder",
        "emulator-faults-list",
        "demo-rerun-after-breaking-an-example",
    ):
        assert finding in ids


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_command_line_gets_one_plain_line(
    case: Case, world: Path, taken_port: int
) -> None:
    if case.setup is not None:
        case.setup(world)
    env = _env(world, {k: _fill(v, world, taken_port) for k, v in case.env.items()})
    args = [_fill(a, world, taken_port) for a in case.args]
    done = cli(*args, env=env, cwd=world, timeout=120)
    both = done.stdout + done.stderr
    assert "Traceback" not in both, both
    assert CANARY not in both
    assert done.returncode == case.code, both
    message = done.stderr if case.stream == E else done.stdout
    lines = _message_lines(message)
    if case.code != 0:
        assert lines, f"no message on std{case.stream}:\n{both}"
    if case.lines is not None:
        assert len(lines) <= case.lines, message
    for words in case.words:
        assert words in message, f"{words!r} not in:\n{message}"
    assert "hunter2pw" not in both


@pytest.mark.parametrize(
    "args",
    [
        ("schema",),
        ("schema", "rules"),
        ("models",),
        ("status",),
        ("status", "--json"),
        ("check", "{w}/drop"),
        ("--version",),
        ("--help",),
        ("retry", "--help"),
        (),
    ],
)
def test_a_closed_pipe_ends_quietly(args: tuple[str, ...], world: Path) -> None:
    """`promptdrop status --json | head -1`: the reader is gone before the first write."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "promptdrop", *(_fill(a, world, 0) for a in args)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(world),
            cwd=world,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    CAPTURED.append((f"promptdrop {' '.join(args)} (closed pipe)", done.stderr))
    assert done.stderr == ""
    # --help, --version and the bare command's help: argparse swallows the failed write, so
    # they may end with their own code; what matters is that nothing is said.
    helps = not args or "--help" in args or "--version" in args
    assert done.returncode in ((EXIT_CLOSED_PIPE, 0, 2) if helps else (EXIT_CLOSED_PIPE,))


_RAISER = """
import sys
import promptdrop.cli as cli

def boom(args):
    raise {exc}

parser = cli.build_parser
def patched():
    p = parser()
    p.set_defaults(func=boom)
    for action in p._subparsers._group_actions[0].choices.values():
        action.set_defaults(func=boom)
    return p

cli.build_parser = patched
sys.exit(cli.main(sys.argv[1:]))
"""


def _run_raiser(
    exc: str, tmp_path: Path, *, debug: bool = False
) -> subprocess.CompletedProcess[str]:
    env = daemon_env(NOWHERE, extra={"PROMPTDROP_DEBUG": "1"} if debug else None)
    done = subprocess.run(
        [sys.executable, "-c", _RAISER.format(exc=exc), "models"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    CAPTURED.append((f"raiser {exc}", done.stdout + done.stderr))
    return done


def test_an_unexpected_error_is_one_line_without_the_key(tmp_path: Path) -> None:
    """The last line of defence in cli.main: the real main, a command that fails as no one
    expected, with the key in the exception's text."""
    done = _run_raiser(f"RuntimeError('lost with key {CANARY} inside')", tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert CANARY not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("promptdrop: internal error: RuntimeError: lost with key [redacted]")
    assert "please report it" in lines[0]


def test_promptdrop_debug_shows_the_traceback_still_without_the_key(tmp_path: Path) -> None:
    done = _run_raiser(f"KeyError('{CANARY}')", tmp_path, debug=True)
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert CANARY not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("promptdrop: internal error: KeyError")


def test_ctrl_c_stays_130(tmp_path: Path) -> None:
    done = _run_raiser("KeyboardInterrupt()", tmp_path)
    assert done.returncode == 130
    assert done.stderr == ""


def test_a_broken_pipe_raised_by_a_command_is_quiet(tmp_path: Path) -> None:
    done = _run_raiser("BrokenPipeError(32, 'Broken pipe')", tmp_path)
    assert done.returncode == EXIT_CLOSED_PIPE
    assert done.stderr == ""


# --- the decisions, row by row ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("https://toapis.com", None),
        ("http://127.0.0.1:8787", None),
        ("http://[::1]:8787/v1", None),
        ("127.0.0.1:18787", "did you mean http://127.0.0.1:18787?"),
        ("ftp://x", "must be an http:// or https:// address"),
        ("http://", "must be an http:// or https:// address"),
        ("http://x:99999", "must be an http:// or https:// address"),
        ("http://[::1", "must be an http:// or https:// address"),
        ("", "must be an http:// or https:// address"),
    ],
)
def test_an_api_address_is_checked(value: str, problem: str | None) -> None:
    found = base_url_problem(value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "TOAPIS_BASE_URL" in found


@pytest.mark.parametrize(
    ("kind", "from_rules_file", "once", "refused"),
    [
        ("folder", False, False, None),
        ("folder", True, True, None),
        ("file", True, False, "is a file, not a folder"),
        ("file", False, True, "is a file, not a folder"),
        ("missing", False, False, "check its name"),
        ("missing", False, True, "check its name"),
        ("missing", True, True, "--once"),
        ("missing", True, False, None),  # waited for
    ],
)
def test_which_roots_the_daemon_starts_with(
    kind: str, from_rules_file: bool, once: bool, refused: str | None, tmp_path: Path
) -> None:
    rule = rules_for_folders([tmp_path / "x"]).rules[0]
    found = root_refusal(rule, kind, from_rules_file=from_rules_file, once=once)  # type: ignore[arg-type]
    assert (found is None) if refused is None else (found is not None and refused in found)


@pytest.mark.parametrize(
    ("port", "files_port", "given", "problem"),
    [
        (8787, 8788, False, None),
        (0, 0, False, None),
        (65534, 65535, False, None),
        (65535, 65536, False, "PORT+1 = 65536"),
        (65535, 0, True, None),
        (99999, 100000, False, "--port must be from 0 to 65535"),
        (-1, 0, False, "--port must be"),
        (5, 70000, True, "--files-port must be"),
    ],
)
def test_emulator_ports(port: int, files_port: int, given: bool, problem: str | None) -> None:
    found = ports_problem(port, files_port, given=given)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1]", "it is a list"),
        ('"x"', "it is a string"),
        ("3", "it is a number"),
        ("null", "it is null"),
        ("{", "not valid JSON"),
        ('{"endpoints": "submit"}', "endpoints must be a list"),
    ],
)
def test_emulator_faults_must_be_an_object(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        faults_from_json(text)
    assert faults_from_json('{"error_503": 0.5}').error_503 == 0.5


def test_the_internal_error_line_is_one_line_and_masks_every_form() -> None:
    line = internal_error_line(
        ValueError("two\nlines with sk-abcdef and sk-abcdefgh"), {"sk-abcdef", "sk-abcdefgh"}
    )
    assert "\n" not in line
    assert "sk-abc" not in line
    assert masked("abc", {"abc"}) == "abc"  # shorter than 4: not a key, left alone
    assert len(internal_error_line(RuntimeError("x" * 5000))) < 500


@pytest.mark.parametrize(
    ("outputs", "current", "missing", "sources", "shown"),
    [
        ([], [], [], ["/d/a.prompt.toml"], ""),
        (["/d/a.png"], ["/d/a.png"], [], ["/d/a.prompt.toml"], "a.png"),
        (
            ["/d/a.v1.png", "/d/a.png", "/d/renamed.png"],
            ["/d/a.png", "/d/renamed.png"],
            [],
            ["/d/renamed.prompt.toml"],
            "renamed.png, a.png (+1 earlier version kept)",
        ),
        (["/d/a.v1.png"], [], [], [], "/d/a.v1.png (an earlier version, kept)"),
        (
            ["/d/a.png", "/e/b.png"],
            ["/d/a.png", "/e/b.png"],
            ["/e/b.png"],
            ["/d/a.prompt.toml"],
            "/e/b.png (missing: the file is gone), a.png",
        ),
    ],
)
def test_plain_status_names_every_output(
    outputs: list[str], current: list[str], missing: list[str], sources: list[str], shown: str
) -> None:
    row = {"outputs": outputs, "current": current, "missing": missing, "sources": sources}
    assert outputs_text(row) == shown


# --- end to end: status, and a rules file's folder that appears later -------------------------


def test_plain_status_and_json_agree_about_outputs(tmp_path: Path, emulator: Emulator) -> None:
    """An edited prompt file (its first image kept as a version) and a copy of it (the image
    copied, not paid again): every image --json lists is named by the plain listing."""
    drop = tmp_path / "drop"
    drop.mkdir()
    env = daemon_env(emulator.base_url, extra={"PROMPTDROP_STATE_DIR": str(tmp_path / "s")})
    once = ("watch", str(drop), "--once", "--poll-interval", "0.1")
    write_prompt(drop / "a.prompt.toml", "a fox")
    assert cli(*once, env=env, cwd=tmp_path).returncode == 0
    write_prompt(drop / "a.prompt.toml", "a fox, blue")
    assert cli(*once, env=env, cwd=tmp_path).returncode == 0
    (drop / "b.prompt.toml").write_bytes((drop / "a.prompt.toml").read_bytes())
    assert cli(*once, env=env, cwd=tmp_path).returncode == 0
    listing = json.loads(cli("status", "--json", env=env, cwd=tmp_path).stdout)
    plain = cli("status", env=env, cwd=tmp_path).stdout
    outputs = [o for job in listing["jobs"] for o in job["outputs"]]
    assert len(outputs) == 3, listing
    for path in outputs:
        assert Path(path).name in plain, plain
    assert "earlier version" in plain


def test_a_rules_files_missing_folder_is_waited_for(tmp_path: Path, emulator: Emulator) -> None:
    """The README's promise: a rule's path need not exist yet. The daemon says it waits, and
    takes the folder up when it appears."""
    later = tmp_path / "later"
    rules = tmp_path / "r.rules.toml"
    rules.write_text(
        f'[[rules]]\nname = "later"\npath = {json.dumps(str(later))}\nsettle = 0.1\n'
        "poll_interval = 0.2\n",
        encoding="utf-8",
    )
    env = daemon_env(emulator.base_url)
    err = tmp_path / "daemon.err"
    with err.open("wb") as fe:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "promptdrop",
                "watch",
                "--rules",
                str(rules),
                "--state-dir",
                str(tmp_path / "s"),
                "--poll-interval",
                "0.1",
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=fe,
            env=env,
            cwd=tmp_path,
        )
    try:
        wait_for(lambda: "waiting for it to appear" in err.read_text(), "the waiting line")
        assert proc.poll() is None
        later.mkdir()
        source = write_prompt(later / "p.prompt.toml", "a lighthouse")
        wait_for(lambda: image_for(source), "the image in the folder that appeared")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        CAPTURED.append(("daemon waiting for its folder", err.read_text(errors="replace")))
    assert "Traceback" not in err.read_text()


def test_a_key_file_read_through_a_pipe_still_works() -> None:
    """`--api-key-file <(pass show toapis)`: a pipe with a writer is read, not taken as empty
    (a named pipe nobody writes to is: see the key-file-a-fifo-nobody-writes case)."""
    from promptdrop.service.config import resolve_api_key

    read, write = os.pipe()
    try:
        os.write(write, b"sk-from-the-pipe\n")
        os.close(write)
        assert resolve_api_key(Path(f"/dev/fd/{read}"), {}) == "sk-from-the-pipe"
    finally:
        os.close(read)
