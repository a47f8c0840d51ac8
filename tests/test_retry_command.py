"""`promptdrop retry` (issue 13): --force names every prompt file it would remake and asks for
--yes; without --force a done file whose image was deleted is taken up again, for free.

Driven through the real command and `watch --once` on real folders against the emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import CANARY, cli, daemon_env, image_for, write_prompt
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.outputs import read_provenance


@dataclass
class Run:
    tmp: Path
    emu: Emulator

    @property
    def drop(self) -> Path:
        path = self.tmp / "drop"
        path.mkdir(exist_ok=True)
        return path

    def cmd(self, *args: str) -> tuple[int, str]:
        done = cli(
            *args,
            "--state-dir",
            str(self.tmp / "state"),
            env=daemon_env(self.emu.base_url),
            cwd=self.tmp,
            timeout=60,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout + done.stderr

    def once(self) -> int:
        return self.cmd("watch", "--once", str(self.drop), "--poll-interval", "0.1")[0]

    def paid(self) -> list[str]:
        return [s["prompt"] for s in self.emu.stats()["submissions"]]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        yield Run(tmp_path, emu)


def test_retry_force_with_yes_is_accepted_when_only_the_named_file_is_affected(run: Run) -> None:
    source = write_prompt(run.drop / "alone.prompt.toml", "a request of its own")
    assert run.once() == 0
    code, said = run.cmd("retry", "--force", "--yes", str(source))
    assert code == 0, said
    assert "queued again" in said
    assert run.once() == 0
    assert run.paid() == ["a request of its own"] * 2


def test_retry_force_without_yes_goes_ahead_when_no_other_file_shares_the_request(
    run: Run,
) -> None:
    source = write_prompt(run.drop / "alone.prompt.toml", "nobody shares this")
    write_prompt(run.drop / "other.prompt.toml", "a different request")
    assert run.once() == 0
    code, said = run.cmd("retry", "--force", str(source))
    assert code == 0, said
    assert "--yes" not in said


def test_retry_force_without_yes_queues_nothing_and_says_what_to_type(run: Run) -> None:
    one = write_prompt(run.drop / "one.prompt.toml", "shared by three")
    two = write_prompt(run.drop / "two.prompt.toml", "shared by three")
    three = write_prompt(run.drop / "three.prompt.toml", "shared by three")
    assert run.once() == 0
    code, said = run.cmd("retry", "--force", str(one))
    assert code == 1
    assert str(two) in said and str(three) in said
    assert f"promptdrop retry --force --yes {one}" in said
    assert "Nothing was queued" in said


def test_retry_force_on_a_folder_holding_every_sharer_needs_no_yes(run: Run) -> None:
    write_prompt(run.drop / "one.prompt.toml", "the folder holds both")
    write_prompt(run.drop / "two.prompt.toml", "the folder holds both")
    assert run.once() == 0
    code, said = run.cmd("retry", "--force", str(run.drop))
    assert code == 0, said
    assert said.count("queued again (done)") == 1  # one request, queued once


def test_retry_on_a_done_file_whose_image_is_gone_says_it_comes_back(run: Run) -> None:
    source = write_prompt(run.drop / "tram.prompt.toml", "a tram to bring back")
    assert run.once() == 0
    image = image_for(source)
    assert image is not None
    image.unlink()
    code, said = run.cmd("retry", str(source))
    assert code == 0, said
    assert "missing image" in said and str(source) in said
    assert "0 job(s) queued again" not in said


def test_retry_on_a_done_file_with_its_image_in_place_does_nothing_and_says_so(
    run: Run,
) -> None:
    source = write_prompt(run.drop / "tram.prompt.toml", "a tram in place")
    assert run.once() == 0
    code, said = run.cmd("retry", str(source))
    assert code == 0, said
    assert "Nothing to retry" in said and "--force" in said


def test_retry_brings_a_deleted_image_back_without_paying(run: Run) -> None:
    """Needs the engine to re-deliver a done job's missing image when its file is taken up
    (issue 13, missing images); the command's part is marking the file to be taken up."""
    source = write_prompt(run.drop / "tram.prompt.toml", "a tram, deleted and back")
    assert run.once() == 0
    image = image_for(source)
    assert image is not None
    image.unlink()
    assert run.cmd("retry", str(source))[0] == 0
    assert run.once() == 0
    back = image_for(source)
    assert back is not None and back.name == image.name
    assert read_provenance(back.read_bytes())["promptdrop:prompt"] == "a tram, deleted and back"
    assert run.paid() == ["a tram, deleted and back"]
