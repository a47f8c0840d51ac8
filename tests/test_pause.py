"""`promptdrop pause` / `resume`: a paused rule submits nothing new while running tasks finish;
the pause outlives a restart; `resume` lets the held files go. Real daemon, real emulator."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import (
    CANARY,
    Daemon,
    cli,
    daemon_env,
    image_for,
    rules_file,
    spawn,
    wait_for,
    write_prompt,
)
from promptdrop.commands.pause import pause_lines
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.jobs.gate import Decision, Gate, may_submit, paused_rules
from promptdrop.ledger import ALL_RULES, Ledger


@dataclass
class Setup:
    tmp: Path
    emu: Emulator
    folder: Path
    state: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def rules(self) -> Path:
        return rules_file(self.tmp / "rules.toml", self.folder, settle=0.2, max_in_flight=1)

    def start(self) -> Daemon:
        daemon = spawn(
            self.rules,
            self.state,
            daemon_env(self.emu.base_url),
            cwd=self.tmp,
            name=f"daemon{len(self.daemons)}",
        )
        self.daemons.append(daemon)
        return daemon.wait_watching(timeout=20)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(
            *args, "--state-dir", str(self.state), env=daemon_env(self.emu.base_url), cwd=self.tmp
        )

    def once(self) -> subprocess.CompletedProcess[str]:
        return self.cli("watch", "--once", "--rules", str(self.rules), "--poll-interval", "0.1")

    def prompts(self) -> list[str]:
        """The prompt of every task the emulator created (every paid submission)."""
        return sorted(s["prompt"] for s in self.emu.stats()["submissions"])

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def job_state(self, source: Path) -> str | None:
        for job in self.status()["jobs"]:
            if str(source) in job["sources"]:
                return str(job["state"])
        return None


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[Setup]:
    """An emulator whose tasks take 1.5 s, so a task is still running when the pause comes."""
    config = EmulatorConfig(api_key=CANARY, latency=1.5, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        folder, state = tmp_path / "drop", tmp_path / "state"
        folder.mkdir()
        setup = Setup(tmp_path, emu, folder, state)
        try:
            yield setup
        finally:
            for daemon in setup.daemons:
                daemon.terminate()


def _said(daemon: Daemon, event: str) -> bool:
    return any(e.get("event") == event for e in daemon.events())


def test_a_paused_rule_submits_nothing_new_running_tasks_finish_and_resume_sends_them(
    pd: Setup,
) -> None:
    daemon = pd.start()
    first = write_prompt(pd.folder / "first.prompt.toml", "first")
    wait_for(lambda: pd.job_state(first) == "running", "the first task to run", daemon=daemon)

    paused = pd.cli("pause", "drop")
    assert paused.returncode == 0, paused.stderr
    assert "paused: rule drop since" in paused.stdout
    wait_for(
        lambda: _said(daemon, "submissions paused by promptdrop pause; polls and downloads go on"),
        "the daemon to notice the pause",
        daemon=daemon,
    )
    second = write_prompt(pd.folder / "second.prompt.toml", "second")
    wait_for(lambda: pd.job_state(second) == "pending", "the second file's job", daemon=daemon)
    # The task that was running when the pause came is still fetched and written...
    wait_for(lambda: image_for(first), "the first image", daemon=daemon)
    assert pd.job_state(first) == "done"
    # ...while the file that came after it is held: pending, never sent, no note beside it.
    assert pd.prompts() == ["first"]
    assert pd.job_state(second) == "pending"
    assert sorted(p.name for p in pd.folder.iterdir()) == [
        "first.png",
        "first.prompt.toml",
        "second.prompt.toml",
    ]
    text = pd.cli("status")
    assert "\npaused: drop since " in text.stdout, text.stdout
    assert [p["rule"] for p in pd.status()["pauses"]] == ["drop"]

    # The pause is kept across a restart.
    assert daemon.terminate() == 0
    again = pd.start()
    wait_for(
        lambda: _said(again, "submissions paused by promptdrop pause; polls and downloads go on"),
        "the restarted daemon to say it is paused",
        daemon=again,
    )
    third = write_prompt(pd.folder / "third.prompt.toml", "third")
    wait_for(lambda: pd.job_state(third) == "pending", "the third file's job", daemon=again)
    assert pd.prompts() == ["first"]

    resumed = pd.cli("resume", "drop")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: image_for(second) and image_for(third), "the held images", daemon=again)
    assert pd.prompts() == ["first", "second", "third"]  # each paid exactly once
    assert _said(again, "submissions resumed by promptdrop resume")
    assert pd.status()["pauses"] == []


def test_watch_once_leaves_a_paused_rules_files_for_the_next_run(pd: Setup) -> None:
    write_prompt(pd.folder / "first.prompt.toml", "first")
    assert pd.once().returncode == 0
    assert pd.cli("pause").returncode == 0  # every rule
    second = write_prompt(pd.folder / "second.prompt.toml", "second")

    held = pd.once()
    assert held.returncode == 0, held.stderr  # asked for, like a spent budget: not a failure
    assert "files not submitted: their rule is paused by promptdrop pause" in held.stderr
    assert pd.prompts() == ["first"]
    assert image_for(second) is None

    assert pd.cli("resume").returncode == 0
    assert pd.once().returncode == 0
    assert image_for(second) is not None
    assert pd.prompts() == ["first", "second"]


def test_pause_names_the_rules_it_knows_when_given_one_it_does_not(pd: Setup) -> None:
    write_prompt(pd.folder / "first.prompt.toml", "first")
    assert pd.once().returncode == 0
    wrong = pd.cli("pause", "dorp")
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == (
        "promptdrop pause: no rule named 'dorp' (rules known: drop); a rule that has not seen "
        "a prompt file yet: give its rules file with --rules"
    )
    assert "Traceback" not in wrong.stderr
    assert pd.status()["pauses"] == []
    # A rule of the rules file given may be paused before it saw any file.
    other = pd.tmp / "other.toml"
    other.write_text(f'[[rules]]\nname = "later"\npath = "{pd.folder}"\n', encoding="utf-8")
    assert pd.cli("pause", "later", "--rules", str(other)).returncode == 0
    again = pd.cli("pause", "later", "--rules", str(other))
    assert again.returncode == 0 and "already paused since" in again.stdout


def test_resuming_one_rule_while_all_are_paused_says_they_still_are(pd: Setup) -> None:
    write_prompt(pd.folder / "first.prompt.toml", "first")
    assert pd.once().returncode == 0
    assert pd.cli("pause").returncode == 0
    one = pd.cli("resume", "drop")
    assert one.returncode == 1
    assert "all rules are paused since" in one.stderr
    assert "promptdrop resume" in one.stderr
    nothing = pd.cli("resume")
    assert nothing.returncode == 0 and "1 pause ended" in nothing.stdout
    assert pd.cli("resume").stdout == "nothing was paused\n"


def test_pause_without_a_ledger_says_where_it_looked(tmp_path: Path) -> None:
    done = cli(
        "pause", "--state-dir", str(tmp_path / "none"), env=daemon_env("http://x"), cwd=tmp_path
    )
    assert done.returncode == 1
    assert "no ledger yet at" in done.stderr and "Traceback" not in done.stderr


def test_the_ledger_keeps_a_pause_once_with_the_time_it_began(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        assert ledger.set_pause("drop", 100.0)
        assert not ledger.set_pause("drop", 200.0)
        assert ledger.set_pause(ALL_RULES, 300.0)
    with Ledger.open(tmp_path) as ledger:  # kept across a reopen (a restart)
        assert ledger.pauses() == {"drop": 100.0, ALL_RULES: 300.0}
        assert ledger.clear_pause("drop") and not ledger.clear_pause("drop")
        assert ledger.clear_pauses() == 1
        assert ledger.pauses() == {}


# The decision: may a job of RULE be submitted now? ----------------------------------------

NOW = 1000.0


@pytest.mark.parametrize(
    ("rule", "pauses", "account_until", "expected"),
    [
        ("drop", {}, None, Decision(Gate.GO)),
        ("drop", {"drop": 5.0}, None, Decision(Gate.RULE_PAUSED, 5.0)),
        ("drop", {"photos": 5.0}, None, Decision(Gate.GO)),  # another rule's pause
        ("drop", {ALL_RULES: 7.0}, None, Decision(Gate.ALL_PAUSED, 7.0)),
        (None, {ALL_RULES: 7.0}, None, Decision(Gate.ALL_PAUSED, 7.0)),  # a job of no rule
        (None, {"drop": 5.0}, None, Decision(Gate.GO)),
        ("drop", {"drop": 5.0, ALL_RULES: 7.0}, None, Decision(Gate.RULE_PAUSED, 5.0)),
        ("drop", {}, NOW + 1, Decision(Gate.ACCOUNT_PAUSED)),  # a refused key, still waiting
        ("drop", {}, NOW, Decision(Gate.GO)),  # the account pause is over
        ("drop", {"drop": 5.0}, NOW + 1, Decision(Gate.RULE_PAUSED, 5.0)),  # the user's wins
    ],
)
def test_may_submit(
    rule: str | None,
    pauses: dict[str, float],
    account_until: float | None,
    expected: Decision,
) -> None:
    assert may_submit(rule, pauses, account_until, NOW) == expected
    assert expected.go is (expected.gate is Gate.GO)


@pytest.mark.parametrize(
    ("pauses", "words"),
    [({}, "none"), ({"b": 1.0, "a": 2.0}, "a, b"), ({"a": 1.0, ALL_RULES: 2.0}, "all rules")],
)
def test_paused_rules_in_words(pauses: dict[str, float], words: str) -> None:
    assert paused_rules(pauses) == words


def test_status_lines_name_the_rule_and_the_local_time_to_the_second() -> None:
    since = 1_700_000_000.0
    import time

    shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    assert pause_lines({"photos": since, ALL_RULES: since}) == [
        f"paused: all rules since {shown}",
        f"paused: photos since {shown}",
    ]
