"""The engine in one process, on a real folder, a real ledger file and the emulator over TCP."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from harness import CANARY
from promptdrop.admin import retry
from promptdrop.emulator import Emulator, Faults
from promptdrop.engine import EngineOptions
from promptdrop.ledger import LEDGER_NAME, JobState, Ledger
from promptdrop.outputs import note_path, read_provenance
from promptdrop.service import WatchOptions, run
from promptdrop.spec import rules_for_folders

FAST = EngineOptions(poll_first=0.05, poll_interval=0.05, retry_later=0.2, pause_first=0.3,
                     pause_cap=0.6)


def _opts(folder: Path, state: Path, emu: Emulator, *, max_in_flight: int = 4,
          resubmit_ambiguous: bool = False) -> WatchOptions:
    rules = rules_for_folders([folder])
    rules.rules[0] = rules.rules[0].model_copy(
        update={"max_in_flight": max_in_flight, "resubmit_ambiguous": resubmit_ambiguous})
    return WatchOptions(rules=rules, state_dir=state, api_key=CANARY,
                        base_url=emu.base_url, once=True, engine=FAST)


def _once(folder: Path, state: Path, emu: Emulator, **kw: object) -> int:
    return asyncio.run(run(_opts(folder, state, emu, **kw)))  # type: ignore[arg-type]


def _png(path: Path, colour: tuple[int, int, int] = (10, 200, 30)) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "PNG")
    path.write_bytes(buf.getvalue())


def test_once_makes_every_image_with_provenance_and_exits_zero(
        tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "cat.prompt.toml").write_text('prompt = "a cat"\nsize = "16:9"\n')
    (folder / "dogs.prompt.toml").write_text('prompt = "two dogs"\ncount = 2\n')

    assert _once(folder, tmp_path / "state", emulator) == 0

    cat = folder / "cat.png"
    with Image.open(cat) as img:
        assert img.size == (1792, 1024)
    info = read_provenance(cat.read_bytes())
    assert info["promptdrop:prompt"] == "a cat"
    assert info["promptdrop:source"] == "cat.prompt.toml"
    assert info["promptdrop:task_id"].startswith(("task_img_", "img_", "tsk_img_"))
    assert (folder / "dogs-1.png").exists() and (folder / "dogs-2.png").exists()
    assert sorted(s["prompt"] for s in emulator.stats()["submissions"]) == [
        "a cat", "two dogs", "two dogs"]


def test_a_second_run_on_unchanged_files_pays_nothing(tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.prompt.toml").write_text('prompt = "a"\n')
    assert _once(folder, tmp_path / "state", emulator) == 0
    os.utime(folder / "a.prompt.toml")
    assert _once(folder, tmp_path / "state", emulator) == 0
    assert len(emulator.stats()["submissions"]) == 1


def test_a_reference_shared_by_many_prompts_is_uploaded_once(
        tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _png(folder / "style.png")
    for i in range(10):
        (folder / f"p{i}.prompt.toml").write_text(
            f'prompt = "variation {i}"\nreferences = ["style.png"]\n')
    assert _once(folder, tmp_path / "state", emulator) == 0
    stats = emulator.stats()
    assert len(stats["uploads"]) == 1
    assert len(stats["submissions"]) == 10
    assert all(s["image_urls"] == [s0] for s in stats["submissions"]
               for s0 in [stats["submissions"][0]["image_urls"][0]])


def test_a_lost_submit_answer_is_ambiguous_noted_and_never_resent(
        tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    source = folder / "lost.prompt.toml"
    source.write_text('prompt = "lost answer"\n')
    emulator.set_faults(Faults(reset=1.0, endpoints=frozenset({"submit"})))

    assert _once(folder, tmp_path / "state", emulator) == 1
    assert len(emulator.stats()["submissions"]) == 1  # the task was created behind the reset
    assert "may or may not have been made" in note_path(source).read_text()

    emulator.set_faults(Faults())
    assert _once(folder, tmp_path / "state", emulator) == 1  # still ambiguous: not resent
    assert len(emulator.stats()["submissions"]) == 1

    with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
        assert retry(ledger, source, io.StringIO()) == 1
    assert _once(folder, tmp_path / "state", emulator) == 0
    assert len(emulator.stats()["submissions"]) == 2
    assert (folder / "lost.png").exists()
    assert not note_path(source).exists()


def test_rules_may_opt_in_to_resubmitting_ambiguous_jobs(
        tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "x.prompt.toml").write_text('prompt = "opt in"\n')
    emulator.set_faults(Faults(html_502=1.0, endpoints=frozenset({"submit"})))
    assert _once(folder, tmp_path / "state", emulator) == 1
    emulator.set_faults(Faults())
    assert _once(folder, tmp_path / "state", emulator, resubmit_ambiguous=True) == 0
    assert len(emulator.stats()["submissions"]) == 2


def test_a_refused_key_pauses_submissions_then_work_resumes(
        tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    for i in range(5):
        (folder / f"k{i}.prompt.toml").write_text(f'prompt = "key test {i}"\n')
    emulator.set_faults(Faults(auth_fail=True))
    note = note_path(folder / "k0.prompt.toml")

    def heal() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                note_path(folder / f"k{i}.prompt.toml").exists() for i in range(5)):
            time.sleep(0.05)
        time.sleep(1.0)
        emulator.set_faults(Faults())

    healer = threading.Thread(target=heal)
    healer.start()
    try:
        assert _once(folder, tmp_path / "state", emulator, max_in_flight=1) == 0
    finally:
        healer.join()
    stats = emulator.stats()
    assert len(stats["submissions"]) == 5
    # One refused POST per pause round (about 3 in the second of refusals), not one per file
    # per retry: with five files and no pause there would be dozens.
    refused = stats["responses_by_status"].get("401", 0)
    assert 1 <= refused <= 6
    assert not note.exists()
    with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
        assert {j.state for j in ledger.jobs()} == {JobState.DONE}


def test_an_api_refusal_fails_the_job_with_the_api_message(
        tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    source = folder / "bad.prompt.toml"
    source.write_text('prompt = "will fail"\n')
    emulator.set_faults(Faults(task_failed=1.0))
    assert _once(folder, tmp_path / "state", emulator) == 1
    text = note_path(source).read_text()
    assert "upstream returned status 422" in text
    assert not list(folder.glob("bad.*g"))


def test_demo_command_makes_the_example_images(tmp_path: Path) -> None:
    """The README's first command, minus the install: `promptdrop demo`."""
    demo = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "promptdrop", "demo", str(demo)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TOAPIS_API_KEY": ""},
    )
    assert proc.returncode == 0, proc.stderr
    prompts = list(demo.glob("*.prompt.toml"))
    assert len(prompts) >= 4
    images = [p for p in demo.iterdir() if p.suffix in (".png", ".jpg") and p.name != "sketch.png"]
    assert len(images) >= len(prompts)
    for image in images:
        with Image.open(image) as img:
            img.load()
    assert "paid submissions" in proc.stdout
