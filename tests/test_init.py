"""`promptdrop init`: a starter rules file and an example prompt that `check` accepts, the
next commands, and never an overwrite (a second init, or any file in the way, writes nothing)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from harness import cli, daemon_env
from promptdrop.commands.init import EXAMPLE_NAME, RULES_NAME, plan_for
from promptdrop.spec import read_rules

ENV = daemon_env("http://127.0.0.1:9")


def test_init_writes_files_that_check_accepts_and_says_what_to_run(tmp_path: Path) -> None:
    done = cli("init", env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / RULES_NAME).is_file()
    assert (tmp_path / "drop" / EXAMPLE_NAME).is_file()
    assert f"promptdrop watch --rules {RULES_NAME}" in done.stdout
    assert "--dry-run" in done.stdout
    checked = cli("check", RULES_NAME, "drop", env=ENV, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.strip() == "checked 2 files: all valid"
    rules = read_rules(tmp_path / RULES_NAME)
    (rule,) = rules.rules
    assert Path(rule.path) == (tmp_path / "drop").resolve()


def test_the_commented_prices_are_valid_once_uncommented(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path), env=ENV, cwd=tmp_path).returncode == 0
    text = (tmp_path / RULES_NAME).read_text(encoding="utf-8")
    opened = "\n".join(
        line[2:] if line.startswith(("# [prices]", '# "')) else line for line in text.splitlines()
    )
    assert "prices" in tomllib.loads(opened)
    (tmp_path / "priced.toml").write_text(opened, encoding="utf-8")
    assert read_rules(tmp_path / "priced.toml").prices


def test_a_second_init_refuses_and_names_what_exists(tmp_path: Path) -> None:
    assert cli("init", "project", env=ENV, cwd=tmp_path).returncode == 0
    rules = tmp_path / "project" / RULES_NAME
    rules.write_text("# mine\n", encoding="utf-8")
    again = cli("init", "project", env=ENV, cwd=tmp_path)
    assert again.returncode == 1
    assert str(Path("project") / RULES_NAME) in again.stderr
    assert EXAMPLE_NAME in again.stderr
    assert rules.read_text(encoding="utf-8") == "# mine\n"


@pytest.mark.parametrize("in_the_way", ["rules", "example", "drop-file"])
def test_any_file_in_the_way_means_nothing_is_written(tmp_path: Path, in_the_way: str) -> None:
    plan = plan_for(tmp_path)
    if in_the_way == "rules":
        plan.rules.write_text("x", encoding="utf-8")
    elif in_the_way == "example":
        plan.drop.mkdir()
        plan.example.write_text("x", encoding="utf-8")
    else:
        plan.drop.write_text("x", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    done = cli("init", str(tmp_path), env=ENV, cwd=tmp_path)
    assert done.returncode == 1
    assert "not overwritten" in done.stderr or "not a folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_an_existing_empty_drop_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    assert cli("init", str(tmp_path), env=ENV, cwd=tmp_path).returncode == 0
    assert (tmp_path / "drop" / EXAMPLE_NAME).is_file()


def test_init_on_a_file_or_an_unwritable_place_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    for target in ("file", "file/below", "/proc/promptdrop-init"):
        done = cli("init", target, env=ENV, cwd=tmp_path)
        assert done.returncode == 1, target
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
