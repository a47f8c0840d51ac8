"""`promptdrop pause [RULE]` and `promptdrop resume [RULE]`: hold or release a rule's (or every
rule's) submissions, recorded in the ledger beside the running daemon.

The daemon notices within a few seconds (it reads the pauses on its loop); running tasks are
still polled and downloaded. Nothing is written into the watched folders: a pause shows in the
daemon's log, its systemd status line and `promptdrop status`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

from promptdrop.commands.existing import open_existing
from promptdrop.jobs.user_pauses import local_time
from promptdrop.ledger import ALL_RULES, LedgerBase
from promptdrop.spec import SpecError, read_rules


def pause_lines(pauses: dict[str, float]) -> list[str]:
    """The pauses as `promptdrop status` lines: "paused: drop since 2026-12-04 03:58:10"."""
    return [
        f"paused: {'all rules' if rule == ALL_RULES else rule} since {local_time(since)}"
        for rule, since in sorted(pauses.items(), key=lambda item: (item[0] != ALL_RULES, item))
    ]


def _rule_known(
    ledger: LedgerBase, rule: str, rules_path: Path | None, command: str, err: TextIO
) -> bool:
    """Whether `rule` names a rule of the rules file given, or one the ledger has seen."""
    names = set(ledger.known_rules())
    if rules_path is not None:
        try:
            names |= {r.name for r in read_rules(rules_path).rules}
        except SpecError as exc:
            print(f"promptdrop {command}: the rules file cannot be used:\n{exc}", file=err)
            return False
    if rule in names:
        return True
    known = ", ".join(sorted(names)) or "none yet"
    hint = (
        ""
        if rules_path is not None
        else "; a rule that has not seen a prompt file yet: give its rules file with --rules"
    )
    print(f"promptdrop {command}: no rule named {rule!r} (rules known: {known}){hint}", file=err)
    return False


def run_pause(
    rule: str | None,
    *,
    state_dir: Path | None,
    ledger_url: str | None,
    rules_path: Path | None,
    out: TextIO,
    err: TextIO,
    now: float | None = None,
) -> int:
    """Pause `rule` (None: every rule); 0 when it is paused now (or already was), else 1."""
    ledger = open_existing(ledger_url, state_dir, "pause", err)
    if ledger is None:
        return 1
    with ledger:
        if rule is not None and not _rule_known(ledger, rule, rules_path, "pause", err):
            return 1
        key = ALL_RULES if rule is None else rule
        name = "all rules" if rule is None else f"rule {rule}"
        fresh = ledger.set_pause(key, time.time() if now is None else now)
        since = local_time(ledger.pauses()[key])
        if not fresh:
            out.write(f"{name} already paused since {since}\n")
            return 0
        out.write(
            f"paused: {name} since {since}. A running daemon submits no new task for "
            f"{'them' if rule is None else 'it'} within a few seconds; tasks already running "
            "are still fetched.\n"
            f"Undo with: promptdrop resume{'' if rule is None else ' ' + rule}\n"
        )
        return 0


def run_resume(
    rule: str | None,
    *,
    state_dir: Path | None,
    ledger_url: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Resume `rule` (None: every pause ends); 0 when nothing holds it any more, else 1."""
    ledger = open_existing(ledger_url, state_dir, "resume", err)
    if ledger is None:
        return 1
    with ledger:
        if rule is None:
            ended = ledger.clear_pauses()
            out.write(
                f"resumed: {ended} pause{'s' if ended != 1 else ''} ended; a running daemon "
                "submits again within a few seconds\n"
                if ended
                else "nothing was paused\n"
            )
            return 0
        ended_own = ledger.clear_pause(rule)
        everything = ledger.pauses().get(ALL_RULES)
        if everything is not None:
            print(
                f"promptdrop resume: {'rule ' + rule + ' resumed, but ' if ended_own else ''}"
                f"all rules are paused since {local_time(everything)} (promptdrop pause "
                "without a rule); resume them all with: promptdrop resume",
                file=err,
            )
            return 1
        if not ended_own:
            left = ledger.pauses()
            paused = f" (paused: {', '.join(sorted(left))})" if left else ""
            out.write(f"rule {rule} was not paused{paused}\n")
            return 0
        out.write(f"resumed: rule {rule}; a running daemon submits again within a few seconds\n")
        return 0
