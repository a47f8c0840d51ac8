"""Adoption (issue 13): an image promptdrop made for a request, found in the folder, is the
job's image; nothing is paid. The choice is a pure table; the reading runs on real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from harness import CANARY, cli, daemon_env, write_prompt
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.jobs.adoption import Candidate, choose, look
from promptdrop.outputs import read_provenance, with_provenance

REQ = "r" * 64


def cand(
    name: str,
    *,
    plain: bool = True,
    request: str | None = REQ,
    index: str | None = "1",
    whole: bool = True,
) -> Candidate:
    return Candidate(
        Path(name), plain, request, index, whole, sha256="s" if whole else "", format="png"
    )


@pytest.mark.parametrize(
    ("candidates", "chosen"),
    [
        ([], None),
        ([cand("p.png")], "p.png"),
        ([cand("p.png", request="other")], None),  # another request's image
        ([cand("p.png", index="2")], None),  # another image of the same request
        ([cand("p.png", whole=False)], None),  # damaged or a link
        ([cand("p.png", request=None, index=None)], None),  # no provenance: not ours
        ([cand("p.v1.png", plain=False), cand("p.jpg")], "p.jpg"),  # the plain name first
        ([cand("p.v1.png", plain=False), cand("p.v2.png", plain=False)], "p.v2.png"),  # newest
        ([cand("p.png", request="other"), cand("p.v1.png", plain=False)], "p.v1.png"),
    ],
)
def test_the_image_adopted_is_made_for_exactly_this_request_whole_and_plain_first(
    candidates: list[Candidate], chosen: str | None
) -> None:
    pick = choose(candidates, REQ, 1)
    assert (None if pick is None else str(pick.path)) == chosen


def _ours(path: Path, request: str = REQ, index: int = 1) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, "PNG")
    info = {"promptdrop:request": request, "promptdrop:index": str(index)}
    info["promptdrop:task_id"] = "task_img_old"
    data = with_provenance(path.read_bytes(), "png", info)
    path.write_bytes(data)
    return data


def test_reading_finds_plain_names_and_kept_versions_with_their_provenance(tmp_path: Path) -> None:
    source = tmp_path / "poster.prompt.toml"
    _ours(tmp_path / "poster.png", request="older")
    _ours(tmp_path / "poster.v1.png")
    (tmp_path / "poster.v3.png").write_bytes(b"after a gap: not looked at")
    found = {c.path.name: c for c in look(source, 1, 1)}
    assert sorted(found) == ["poster.png", "poster.v1.png"]
    assert found["poster.v1.png"].request == REQ and found["poster.v1.png"].whole
    assert found["poster.v1.png"].task_id == "task_img_old"
    pick = choose(list(found.values()), REQ, 1)
    assert pick is not None and pick.path.name == "poster.v1.png"


def test_a_damaged_image_or_a_link_claiming_our_request_is_not_adopted(tmp_path: Path) -> None:
    source = tmp_path / "poster.prompt.toml"
    data = _ours(tmp_path / "elsewhere" / "real.png")
    (tmp_path / "poster.png").write_bytes(data[: len(data) - 20])  # cut short
    (tmp_path / "poster.jpg").symlink_to(tmp_path / "elsewhere" / "real.png")
    found = look(source, 1, 1)
    assert {c.path.name for c in found} == {"poster.png", "poster.jpg"}
    assert not any(c.whole for c in found)
    assert choose(found, REQ, 1) is None


def test_a_fresh_ledger_adopts_a_kept_version_and_brings_it_back_for_free(
    tmp_path: Path,
) -> None:
    """The image of the current text survives only as poster.v1.png beside a newer image of
    another text; a new state folder adopts it and makes it current, paying nothing."""
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    drop = tmp_path / "drop"
    drop.mkdir()
    source = write_prompt(drop / "poster.prompt.toml", "take one")
    with Emulator(config) as emu:
        env = daemon_env(emu.base_url)

        def once(state: str) -> None:
            done = cli(
                "watch",
                "--once",
                str(drop),
                "--state-dir",
                str(tmp_path / state),
                "--log-format",
                "json",
                env=env,
                cwd=tmp_path,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr

        once("a")
        write_prompt(source, "take two")
        once("a")
        write_prompt(source, "take one")  # back to the first text, seen by a new ledger
        emu.reset_stats()
        once("b")
        assert emu.stats()["submissions"] == []
    current = [p for p in drop.iterdir() if p.name.startswith("poster.") and p.suffix == ".png"]
    texts = {p.name: read_provenance(p.read_bytes())["promptdrop:prompt"] for p in current}
    assert texts["poster.png"] == "take one"
    assert sorted(texts.values()) == ["take one", "take two"]


def test_a_webp_image_is_adopted_by_its_xmp_provenance(tmp_path: Path) -> None:
    source = tmp_path / "poster.prompt.toml"
    plain = tmp_path / "poster.webp"
    Image.new("RGB", (8, 8), (200, 20, 30)).save(plain, "WEBP")
    info = {"promptdrop:request": REQ, "promptdrop:index": "1"}
    plain.write_bytes(with_provenance(plain.read_bytes(), "webp", info))
    pick = choose(look(source, 1, 1), REQ, 1)
    assert pick is not None and pick.path == plain and pick.format == "webp"
