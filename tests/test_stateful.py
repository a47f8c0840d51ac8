"""A stateful property test: whatever users and the API do, nobody pays twice, nothing is lost.

Hypothesis drives a real folder, a real ledger and the emulator over TCP through adds, edits,
touches, renames, deletes, API failures and crashes (a real `promptdrop watch --once`
process SIGKILLed at a named crash point), checking after every pass that
- the API created at most one task per distinct request (prompt text here), and
- every valid prompt file present ends with its image, unless its request failed or was
  left ambiguous by an injected fault.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from figures import record
from harness import CANARY
from promptdrop.crashpoints import POINTS
from promptdrop.emulator import Emulator, EmulatorConfig, Faults
from promptdrop.jobs.engine import EngineOptions
from promptdrop.jobs.lookups import LookupPolicy
from promptdrop.ledger import LEDGER_NAME, JobState, Ledger
from promptdrop.service.runner import WatchOptions, run
from promptdrop.spec import rules_for_folders

PROMPTS = [f"picture number {i}" for i in range(6)]
NAMES = [f"f{i}" for i in range(4)]
FAST = EngineOptions(
    poll_first=0.02,
    poll_interval=0.02,
    retry_later=0.1,
    lookups=LookupPolicy(spread=1.0, proof_delay=0.1),
)


class Folder(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="promptdrop-stateful-"))
        self.folder = self.tmp / "drop"
        self.folder.mkdir()
        self.state = self.tmp / "state"
        self.emu = Emulator(EmulatorConfig(latency=0.02, rate_limits=None, seed=0)).start()
        self.files: dict[str, str] = {}  # name -> prompt text, as on disk
        self.faulted: set[str] = set()  # prompts whose job an injected fault may have ended
        self.steps = 0
        self.crashes = 0
        self.seen: dict[str, str] = {}

    def teardown(self) -> None:
        stats = self.emu.stats()
        record(
            "stateful",
            {
                "sequences": 1,
                "steps": self.steps,
                "crashes": self.crashes,
                "paid_submissions": len(stats["submissions"]),
                "distinct_requests_paid": len({s["prompt"] for s in stats["submissions"]}),
            },
        )
        self.emu.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.prompt.toml"

    def _write(self, name: str, prompt: str) -> None:
        self._path(name).write_text(f'prompt = "{prompt}"\n')
        self.files[name] = prompt

    @rule(name=st.sampled_from(NAMES), prompt=st.sampled_from(PROMPTS))
    def add_or_edit(self, name: str, prompt: str) -> None:
        self._write(name, prompt)

    @rule(name=st.sampled_from(NAMES))
    def touch(self, name: str) -> None:
        if name in self.files:
            os.utime(self._path(name))

    @rule(old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def rename(self, old: str, new: str) -> None:
        if old in self.files and new not in self.files:
            self._path(old).rename(self._path(new))
            self.files[new] = self.files.pop(old)

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        if name in self.files:
            self._path(name).unlink()
            del self.files[name]

    @rule(fault=st.sampled_from(["task_failed", "reset", "error_500"]))
    def pass_with_api_faults(self, fault: str) -> None:
        self.emu.set_faults(Faults.from_dict({fault: 0.5}))
        try:
            self._pass()
        finally:
            self.emu.set_faults(Faults())
        if fault != "error_500":  # a 500 on submit created nothing and was retried
            self.faulted.update(self.files.values())

    @rule()
    def clean_pass(self) -> None:
        self._pass()

    @rule(point=st.sampled_from(POINTS))
    def crash_and_restart(self, point: str) -> None:
        env = {
            **os.environ,
            "PROMPTDROP_CRASH_AT": point,
            "TOAPIS_API_KEY": CANARY,
            "TOAPIS_BASE_URL": self.emu.base_url,
        }
        subprocess.run(
            [
                sys.executable,
                "-m",
                "promptdrop",
                "watch",
                "--once",
                str(self.folder),
                "--state-dir",
                str(self.state),
                "--poll-interval",
                "0.02",
            ],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        self.crashes += 1
        if point in ("after_intent", "after_answer") or not self._lookups_proven():
            # May be left ambiguous, by design: the crashing job itself, or (before this ledger
            # has seen a lookup by business id work) any other job caught between its intent
            # and its answer.
            self.faulted.update(self.files.values())
        self._pass()

    def _lookups_proven(self) -> bool:
        if not (self.state / LEDGER_NAME).exists():
            return False
        with Ledger(self.state / LEDGER_NAME) as ledger:
            return ledger.proven_at(self.emu.base_url) is not None

    def _pass(self) -> None:
        self.steps += 1
        self.seen = dict(self.files)  # what the folder held when this pass read it
        opts = WatchOptions(
            rules=rules_for_folders([self.folder]),
            state_dir=self.state,
            api_key=CANARY,
            base_url=self.emu.base_url,
            once=True,
            engine=FAST,
        )
        asyncio.run(run(opts))

    @invariant()
    def never_paid_twice(self) -> None:
        created = Counter(s["prompt"] for s in self.emu.stats()["submissions"])
        assert all(n == 1 for n in created.values()), created

    @invariant()
    def every_settled_file_has_its_image(self) -> None:
        if not (self.state / LEDGER_NAME).exists():
            return
        with Ledger(self.state / LEDGER_NAME) as ledger:
            for name, prompt in self.seen.items():
                if self.files.get(name) != prompt:
                    continue  # changed since the last pass: not taken up yet
                src = ledger.get_source(self._path(name))
                if src is None or src.request_hash is None:
                    continue
                if src.status != "active":
                    continue
                states = {j.state for j in ledger.jobs_for_request(src.request_hash)}
                if states != {JobState.DONE}:
                    assert prompt in self.faulted, (name, prompt, states)
                    continue
                if ledger.outputs_for_source(self._path(name)):
                    continue
                # Done, yet never written for this file: only allowed for a file renamed or
                # re-added while a crash left the same request mid-way.
                assert prompt in self.faulted, (name, prompt, "no image")


Folder.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_folder_state_machine = Folder.TestCase
