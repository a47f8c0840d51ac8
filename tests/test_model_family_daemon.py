"""The model family through the real daemon: `watch --once` against the emulator over loopback
makes a 21:9 4K nano-banana-pro image, a 1:8 0.5K gemini-3.1-flash-image-preview image and a
JPEG from an official model, each from exactly one paid task whose body holds exactly the
documented fields, and an edit of the resolution pays once more."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image

from harness import CANARY, cli, daemon_env, image_for, note_for
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.outputs import read_provenance

FILES = {
    "wide.prompt.toml": (
        'prompt = "A lighthouse on a cliff at dusk, wide matte painting"\n'
        'model = "nano-banana-pro"\nsize = "21:9"\nresolution = "4K"\n'
    ),
    "banner.prompt.toml": (
        'prompt = "A tall paper banner with a dragon"\n'
        'model = "gemini-3.1-flash-image-preview"\nsize = "1:8"\nresolution = "0.5K"\n'
    ),
    "ramen.prompt.toml": (
        'prompt = "A bowl of ramen, overhead food photography"\n'
        'model = "nano-banana-official"\nsize = "4:5"\n\n'
        '[options]\noutput_format = "image/jpeg"\ncompression_quality = 85\ntemperature = 0.6\n'
    ),
}
# What each paid task must carry, whole: the documented fields and nothing else.
BODIES = {
    "wide": {
        "model": "gemini-3-pro-image-preview",
        "prompt": "A lighthouse on a cliff at dusk, wide matte painting",
        "size": "21:9",
        "n": 1,
        "metadata": {"resolution": "4K"},
    },
    "banner": {
        "model": "gemini-3.1-flash-image-preview",
        "prompt": "A tall paper banner with a dragon",
        "size": "1:8",
        "n": 1,
        "metadata": {"resolution": "0.5K"},
    },
    "ramen": {
        "model": "gemini-2.5-flash-image-official",
        "prompt": "A bowl of ramen, overhead food photography",
        "size": "4:5",
        "n": 1,
        "metadata": {
            "imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 85},
            "temperature": 0.6,
        },
    },
}


def _once(emu: Emulator, folder: Path, state: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli(
        "watch",
        "--once",
        str(folder),
        "--state-dir",
        str(state),
        "--poll-interval",
        "0.1",
        "--log-format",
        "json",
        env=daemon_env(emu.base_url),
        cwd=cwd,
        timeout=120,
    )


def _bodies(emu: Emulator) -> dict[str, dict[str, Any]]:
    """Each paid body by example name, its client_business_id checked and left out: a fresh
    random id per attempt, documented on the task page."""
    subs = emu.stats()["submissions"]
    by_prompt = {b["prompt"]: name for name, b in BODIES.items()}
    bodies: dict[str, dict[str, Any]] = {}
    for s in subs:
        body: dict[str, Any] = dict(s["body"])
        assert re.fullmatch(r"pd-[0-9a-f]{24}", body.pop("client_business_id"))
        bodies[str(by_prompt.get(body["prompt"], body["prompt"]))] = body
    return bodies


def test_the_family_through_the_daemon(tmp_path: Path) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        done = _once(emu, folder, state, tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        subs = emu.stats()["submissions"]
        assert len(subs) == 3, [s["body"] for s in subs]
        assert _bodies(emu) == BODIES

        wide = image_for(folder / "wide.prompt.toml")
        banner = image_for(folder / "banner.prompt.toml")
        ramen = image_for(folder / "ramen.prompt.toml")
        assert wide is not None and banner is not None and ramen is not None
        with Image.open(wide) as im:
            assert im.size == (4096, round(4096 * 9 / 21))
        with Image.open(banner) as im:
            assert im.size == (512 // 8, 512)
        with Image.open(ramen) as im:
            assert im.format == "JPEG"
        assert ramen.name == "ramen.jpg"
        info = read_provenance(wide.read_bytes())
        assert info["promptdrop:model"] == "gemini-3-pro-image-preview"
        assert info["promptdrop:resolution"] == "4K"
        options = json.loads(read_provenance(ramen.read_bytes())["promptdrop:options"])
        assert options == {
            "output_format": "image/jpeg",
            "compression_quality": 85,
            "temperature": 0.6,
        }

        status = cli(
            "status", "--state-dir", str(state), env=daemon_env(emu.base_url), cwd=tmp_path
        )
        assert "[gemini-3-pro-image-preview (nano-banana-pro), 21:9, 4K]" in status.stdout
        assert 'output_format "image/jpeg"' in status.stdout

        # Run again: nothing new is paid. Then change the resolution: one more task, and the
        # 4K image is kept as the first version.
        assert _once(emu, folder, state, tmp_path).returncode == 0
        assert len(emu.stats()["submissions"]) == 3
        (folder / "wide.prompt.toml").write_text(
            FILES["wide.prompt.toml"].replace('"4K"', '"2K"'), encoding="utf-8"
        )
        assert _once(emu, folder, state, tmp_path).returncode == 0
        subs = emu.stats()["submissions"]
        assert len(subs) == 4
        assert subs[-1]["body"]["metadata"] == {"resolution": "2K"}
        with Image.open(folder / "wide.png") as im:
            assert im.size == (2048, round(2048 * 9 / 21))
        with Image.open(folder / "wide.v1.png") as im:
            assert im.size == (4096, round(4096 * 9 / 21))


def test_credits_price_each_task_by_its_model_and_resolution(tmp_path: Path) -> None:
    """60 credits a day: a 4K pro image (48) and a 2K one (24) cannot both go today, and a
    model with no price is held unsent."""
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    pro = 'prompt = "{}"\nmodel = "nano-banana-pro"\nsize = "21:9"\nresolution = "{}"\n'
    (folder / "big.prompt.toml").write_text(pro.format("a big lighthouse", "4K"))
    (folder / "mid.prompt.toml").write_text(pro.format("a middling lighthouse", "2K"))
    (folder / "flash.prompt.toml").write_text(
        'prompt = "a banner"\nmodel = "gemini-3.1-flash-image-preview"\nsize = "1:8"\n'
    )
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[prices]\n"nano-banana-pro" = { "1K" = 24, "2K" = 24, "4K" = 48 }\n\n'
        f'[[rules]]\nname = "drop"\npath = {json.dumps(str(folder))}\nsettle = 0.1\n'
        "daily_credits = 60\n"
    )
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        done = cli(
            "watch",
            "--once",
            "--rules",
            str(rules),
            "--state-dir",
            str(state),
            "--poll-interval",
            "0.1",
            "--log-format",
            "json",
            env=daemon_env(emu.base_url),
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 1, done.stderr[-3000:]  # a file is held for its price
        bodies = [s["body"] for s in emu.stats()["submissions"]]
    assert len(bodies) == 1 and bodies[0]["model"] == "gemini-3-pro-image-preview"
    made = "big" if bodies[0]["metadata"] == {"resolution": "4K"} else "mid"
    other = "mid" if made == "big" else "big"
    assert image_for(folder / f"{made}.prompt.toml") is not None
    assert image_for(folder / f"{other}.prompt.toml") is None
    assert "credits" in note_for(folder / f"{other}.prompt.toml").read_text()
    unpriced = note_for(folder / "flash.prompt.toml").read_text()
    assert '"gemini-3.1-flash-image-preview" = { "1K" = CREDITS }' in unpriced


def test_status_shows_a_refused_files_first_problem(tmp_path: Path) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    (folder / "bad.prompt.toml").write_text('prompt = "x"\nsize = "21:9"\n')
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        assert _once(emu, folder, state, tmp_path).returncode == 1
        assert emu.stats()["submissions"] == []
        status = cli(
            "status", "--state-dir", str(state), env=daemon_env(emu.base_url), cwd=tmp_path
        )
    [line] = [line for line in status.stdout.splitlines() if line.startswith("invalid")]
    assert 'bad.prompt.toml  line 2: size "21:9" is not offered by gemini-2.5' in line
