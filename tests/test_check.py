"""`promptdrop check`: which files it looks at, what it prints, and its exit codes."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from promptdrop.commands.check import run_check

REPO = Path(__file__).resolve().parent.parent


def check(*paths: Path, root: Path | None = None) -> tuple[int, list[str]]:
    out = io.StringIO()
    rc = run_check(list(paths), out, root=root)
    return rc, out.getvalue().splitlines()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_folder_of_valid_files_passes(tmp_path: Path) -> None:
    write(tmp_path / "a.prompt.toml", 'prompt = "fox"\n')
    write(tmp_path / "sub" / "b.prompt.toml", 'prompt = "owl"\nsize = "16:9"\n')
    write(tmp_path / "sub" / ".promptdrop.toml", 'style = "ink"\n')
    rc, lines = check(tmp_path)
    assert rc == 0
    assert lines == ["checked 3 files: all valid"]


def test_a_problem_is_printed_as_path_line_col_message(tmp_path: Path) -> None:
    write(tmp_path / "a.prompt.toml", 'prompt = "fox"\n')
    bad = write(tmp_path / "b.prompt.toml", 'prompt = "owl"\nsize = "7:3"\n')
    rc, lines = check(tmp_path)
    assert rc == 1
    assert lines == [
        f"{bad}:2:1: size '7:3' is not one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 4:5, 5:4, "
        "21:9, 1:4, 4:1, 1:8, 8:1",
        "checked 2 files: 1 with problems",
    ]


def test_a_toml_syntax_error_names_its_line_and_column(tmp_path: Path) -> None:
    bad = write(tmp_path / "b.prompt.toml", 'prompt = "owl"\ncount = = 2\n')
    rc, lines = check(bad)
    assert rc == 1
    assert lines[0].startswith(f"{bad}:2:9: this is not valid TOML")


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path / "a.prompt.toml", 'prompt = "fox"\n')
    rc, lines = check(tmp_path / "a.prompt.toml", tmp_path / "nope")
    assert rc == 2
    assert lines == [f"promptdrop check: no such file or folder: {tmp_path / 'nope'}"]


def test_a_file_promptdrop_does_not_read_is_a_usage_error(tmp_path: Path) -> None:
    rc, lines = check(write(tmp_path / "notes.txt", "hello\n"))
    assert rc == 2
    assert "is not a prompt file" in lines[0]


def test_hidden_folders_backups_and_other_toml_files_in_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "a.prompt.toml", 'prompt = "fox"\n')
    write(tmp_path / ".git" / "x.prompt.toml", "broken = \n")
    write(tmp_path / ".hidden.prompt.toml", "broken = \n")
    write(tmp_path / "a.prompt.toml~", "broken = \n")
    write(tmp_path / "pyproject.toml", "broken = \n")
    write(tmp_path / "a.png", "not an image, but never referenced\n")
    rc, lines = check(tmp_path)
    assert (rc, lines) == (0, ["checked 1 file: all valid"])


def test_the_folder_argument_itself_may_be_hidden(tmp_path: Path) -> None:
    write(tmp_path / ".drop" / "a.prompt.toml", 'prompt = "fox"\n')
    assert check(tmp_path / ".drop") == (0, ["checked 1 file: all valid"])


def test_an_explicit_rules_file_is_checked_as_rules(tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", '[[rules]]\nname = "a"\npath = "d"\n')
    bad = write(tmp_path / "bad.toml", '[[rules]]\nname = "a"\npath = "d"\nsetle = 1\n')
    rc, lines = check(good, bad)
    assert rc == 1
    assert lines == [
        f"{bad}:4:1: rule 'a': unknown key 'setle': did you mean 'settle'?",
        "checked 2 files: 1 with problems",
    ]


def test_a_broken_defaults_file_is_reported_once(tmp_path: Path) -> None:
    defaults = write(tmp_path / ".promptdrop.toml", 'sise = "1:1"\n')
    for name in "abc":
        write(tmp_path / f"{name}.prompt.toml", 'prompt = "fox"\n')
    rc, lines = check(tmp_path)
    assert rc == 1
    assert lines == [
        f"{defaults}:1:1: unknown key 'sise': did you mean 'size'?",
        "checked 4 files: 4 with problems",
    ]


def test_a_file_argument_has_its_own_folder_as_root_unless_root_is_given(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "shared.png")
    prompt = write(
        tmp_path / "sub" / "a.prompt.toml", 'prompt = "fox"\nreferences = ["../shared.png"]\n'
    )
    rc, lines = check(prompt)
    assert rc == 1
    assert "points outside the watched folder" in lines[0]
    assert check(prompt, root=tmp_path) == (0, ["checked 1 file: all valid"])


def test_defaults_references_are_checked_against_the_root(tmp_path: Path) -> None:
    defaults = write(tmp_path / ".promptdrop.toml", 'references = ["gone.png"]\n')
    rc, lines = check(defaults)
    assert rc == 1
    assert lines[0] == (
        f"{defaults}:1:1: reference 'gone.png' was not found "
        f"(looked for {tmp_path.resolve() / 'gone.png'})"
    )


def test_a_fifo_in_a_folder_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.prompt.toml")
    rc, lines = check(tmp_path)
    assert rc == 1
    assert "named pipe" in lines[0]


def test_the_shipped_examples_and_rules_files_are_valid() -> None:
    rc, lines = check(
        REPO / "rules" / "examples",
        REPO / "rules" / "basic.rules.toml",
        REPO / "rules" / "shared-drive.rules.toml",
    )
    assert rc == 0, lines
    assert len(list((REPO / "rules" / "examples").glob("*.prompt.toml"))) >= 4


CLI_READY = importlib.util.find_spec("promptdrop.emulator.cli") is not None


@pytest.mark.skipif(not CLI_READY, reason="the CLI imports promptdrop.emulator.cli, not there yet")
def test_the_cli_exit_codes_are_0_1_and_2(tmp_path: Path) -> None:
    good = write(tmp_path / "good" / "a.prompt.toml", 'prompt = "fox"\n')
    bad = write(tmp_path / "bad" / "a.prompt.toml", 'prompt = "fox"\ncount = 0\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "promptdrop", "check", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = run(str(good.parent))
    assert (ok.returncode, ok.stdout) == (0, "checked 1 file: all valid\n")
    failed = run(str(bad))
    assert failed.returncode == 1
    assert f"{bad}:2:1: count must be a whole number" in failed.stdout
    missing = run(str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stdout + missing.stderr


def _png_of(path: Path, size: int) -> Path:
    """A real PNG padded after its end to exactly `size` bytes (sparse: fast to make)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(buffer, format="PNG")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
        f.truncate(size)
    return path


@pytest.mark.parametrize(("size", "passes"), [(10_000_000, True), (10_000_001, False)])
def test_a_reference_may_be_10_000_000_bytes_and_not_one_more(
    tmp_path: Path, size: int, passes: bool
) -> None:
    """The API's "10MB" read strictly: what `check` passes, the server cannot refuse for size."""
    _png_of(tmp_path / "ref.png", size)
    prompt = write(tmp_path / "a.prompt.toml", 'prompt = "fox"\nreferences = ["ref.png"]\n')
    rc, lines = check(tmp_path)
    if passes:
        assert (rc, lines) == (0, ["checked 1 file: all valid"])
    else:
        assert rc == 1
        assert lines[0] == (
            f"{prompt}:2:1: reference 'ref.png' is 10,000,001 bytes (10.0 MB); the API takes "
            "images up to 10 MB (10,000,000 bytes). Make it smaller"
        )
