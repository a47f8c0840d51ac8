"""`promptdrop completion bash|zsh|fish`: a script per shell that knows every command."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import cli
from promptdrop.cli import build_parser


def _subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("the parser has no subcommands")


def test_the_parser_has_the_commands_the_scripts_must_know() -> None:
    """So the test below cannot pass by checking an empty list."""
    assert {"watch", "status", "pause", "resume", "completion", "retry"} <= set(_subcommands())


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shells_script_is_printed_and_names_every_command(shell: str, tmp_path: Path) -> None:
    done = cli("completion", shell, env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    script = done.stdout
    assert script.endswith("\n") and "promptdrop" in script
    missing = [name for name in _subcommands() if name not in script]
    assert missing == []
    # Options of a command are completed too.
    assert "--state-dir" in script and "--log-format" in script


def test_the_bash_script_is_valid_bash(tmp_path: Path) -> None:
    script = tmp_path / "promptdrop.bash"
    script.write_text(cli("completion", "bash", env={}, cwd=tmp_path).stdout, encoding="utf-8")
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_bash_script_completes_a_command_name(tmp_path: Path) -> None:
    """Sourced in a real bash, `promptdrop pa<Tab>` offers pause."""
    script = tmp_path / "promptdrop.bash"
    script.write_text(cli("completion", "bash", env={}, cwd=tmp_path).stdout, encoding="utf-8")
    probe = (
        f"source {script}; COMP_WORDS=(promptdrop pa); COMP_CWORD=1; COMP_LINE='promptdrop pa';"
        " COMP_POINT=${#COMP_LINE}; _shtab_promptdrop; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pause"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_is_valid_zsh(tmp_path: Path) -> None:
    script = tmp_path / "_promptdrop"
    script.write_text(cli("completion", "zsh", env={}, cwd=tmp_path).stdout, encoding="utf-8")
    checked = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    done = cli("completion", "powershell", env={}, cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid choice: 'powershell'" in done.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_the_fish_script_completes_a_command_name(tmp_path: Path) -> None:
    script = tmp_path / "promptdrop.fish"
    script.write_text(cli("completion", "fish", env={}, cwd=tmp_path).stdout, encoding="utf-8")
    assert subprocess.run(["fish", "-n", str(script)], capture_output=True).returncode == 0
    done = subprocess.run(
        ["fish", "--no-config", "-c", f"source {script}; complete -C 'promptdrop pa'"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["pause"]
