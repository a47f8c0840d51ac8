"""The shipped systemd units: `systemd-analyze verify` finds nothing to say about them, and
`systemd-analyze security --offline=yes` rates each 2.0 or lower.

verify insists that ExecStart's program exists, and the units name where promptdrop is
installed on a server (/usr/local/bin, ~/.local/bin), not this checkout. So each unit is copied
into a temporary folder with only that program path replaced by the promptdrop script really
installed here; every other line is checked as shipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SYSTEM_UNIT = UNITS / "promptdrop.service"
USER_UNIT = UNITS / "user" / "promptdrop.service"
DROP_IN = UNITS / "promptdrop.service.d" / "roots.conf.example"
MAX_EXPOSURE = 2.0


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = (
            "systemd-analyze is missing; install Debian's systemd package "
            "(apt-get install systemd) to check the unit files"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _installed_promptdrop() -> str:
    script = Path(sys.executable).parent / "promptdrop"
    found = str(script) if script.exists() else shutil.which("promptdrop")
    assert found, "the promptdrop script is not installed (pip install -e .)"
    return found


def _with_real_program(unit: Path, folder: Path) -> Path:
    text = unit.read_text(encoding="utf-8")
    exec_lines = re.findall(r"^ExecStart=(\S+)", text, flags=re.MULTILINE)
    assert len(exec_lines) == 1 and exec_lines[0].endswith("/promptdrop"), exec_lines
    program = exec_lines[0]
    # ExecReload= runs the same program (`promptdrop reload --wait`).
    copy = folder / "promptdrop.service"
    copy.write_text(
        re.sub(
            rf"^(Exec\w+=){re.escape(program)} ",
            lambda m: f"{m.group(1)}{_installed_promptdrop()} ",
            text,
            flags=re.MULTILINE,
        ),
        encoding="utf-8",
    )
    return copy


def _verify(unit: Path, tmp_path: Path, *, user: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    argv = [_analyze(), "verify", "--man=no"]
    if user:
        # A user manager needs a runtime directory even to load a unit offline.
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        argv.append("--user")
    return subprocess.run(
        [*argv, str(unit)], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _exposure(unit: Path) -> float:
    done = subprocess.run(
        [_analyze(), "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, f"no overall exposure in the output:\n{done.stdout}\n{done.stderr}"
    return float(match.group(1))


def test_the_system_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    done = _verify(_with_real_program(SYSTEM_UNIT, tmp_path), tmp_path, user=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_user_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    done = _verify(_with_real_program(USER_UNIT, tmp_path), tmp_path, user=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_would_report_a_broken_unit(tmp_path: Path) -> None:
    # The check above is only worth something if verify speaks up about a mistake.
    unit = _with_real_program(SYSTEM_UNIT, tmp_path)
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"), encoding="utf-8")
    done = _verify(unit, tmp_path, user=False)
    assert "notifyy" in done.stdout + done.stderr


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_the_sandbox_rates_two_or_lower(unit: Path) -> None:
    assert _exposure(unit) <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_the_key_comes_as_a_credential_and_never_through_the_environment(unit: Path) -> None:
    text = unit.read_text(encoding="utf-8")
    directives = dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.MULTILINE))
    assert directives["LoadCredential"].startswith("toapis-api-key:")
    environment = re.findall(r"^Environment(?:File)?=(.*)$", text, flags=re.MULTILINE)
    assert all(e.startswith("PROMPTDROP_STATE_DIR=") for e in environment), environment
    assert "TOAPIS_API_KEY" not in text
    assert directives["Type"] == "notify"
    assert directives["Restart"] == "on-failure"
    # The drain takes up to 8 s (EngineOptions.drain_timeout) plus the watcher's 2 s stop.
    assert directives["TimeoutStopSec"] == "15s"


def test_the_example_drop_in_only_adds_writable_folders() -> None:
    text = DROP_IN.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "[Service]"
    assert lines[1:] and all(ln.startswith("ReadWritePaths=") for ln in lines[1:])


def test_the_drop_in_verifies_with_the_unit(tmp_path: Path) -> None:
    unit = _with_real_program(SYSTEM_UNIT, tmp_path)
    drop_in = tmp_path / "promptdrop.service.d"
    drop_in.mkdir()
    shutil.copy(DROP_IN, drop_in / "roots.conf")
    done = _verify(unit, tmp_path, user=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _directives(unit: Path) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", unit.read_text(encoding="utf-8"), flags=re.MULTILINE))


def test_the_system_reload_waits_for_the_daemon_and_the_ledger_is_its_state_directory() -> None:
    """Issue 17: not /bin/kill -HUP, which returns before the rules are read."""
    directives = _directives(SYSTEM_UNIT)
    assert directives["ExecReload"] == "/usr/local/bin/promptdrop reload --wait"
    assert directives["StateDirectory"] == "promptdrop"  # /var/lib/promptdrop on every systemd


def test_the_user_unit_reloads_and_keeps_its_ledger_in_local_state() -> None:
    """Issue 17: PrivateIPC= made every ExecReload= fail in a user manager, and
    StateDirectory= meant ~/.config before systemd 254."""
    text = USER_UNIT.read_text(encoding="utf-8")
    directives = _directives(USER_UNIT)
    assert directives["ExecReload"] == "%h/.local/bin/promptdrop reload --wait"
    assert not re.search(r"^PrivateIPC=", text, flags=re.MULTILINE)
    assert not re.search(r"^StateDirectory", text, flags=re.MULTILINE)
    state = "%h/.local/state/promptdrop"
    assert directives["Environment"] == f"PROMPTDROP_STATE_DIR={state}"
    assert directives["ReadWritePaths"] == state
    assert directives["ExecStartPre"] == f"+/bin/mkdir -p -m 0700 {state}"
