"""WebP carries provenance as an XMP packet in its RIFF container: written without re-encoding
the picture, read back by us and by Pillow, and refused for data that is not a WebP."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from promptdrop import imaging
from promptdrop.outputs import read_provenance, with_provenance
from promptdrop.outputs.webp import parse_packet, riff_chunks, xmp_packet

INFO = {
    "promptdrop:prompt": 'Eine Katze 🚀 & "retro" <poster>\nsecond line\ttab',
    "promptdrop:request": "ab" * 32,
    "promptdrop:index": "2",
    "promptdrop:task_id": "task_01J9ABC",
}

# Every shape a WebP comes in: simple lossy (VP8), simple lossless (VP8L, with and without
# alpha), and extended (VP8X) with alpha, Exif or an XMP packet of someone else's.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "lossy": ("RGB", {}),
    "lossless": ("RGB", {"lossless": True}),
    "lossless-alpha": ("RGBA", {"lossless": True}),
    "lossy-alpha": ("RGBA", {}),
    "with-exif": ("RGB", {"exif": b"Exif\0\0MM\0*\0\0\0\x08\0\0"}),
    "with-foreign-xmp": ("RGB", {"xmp": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"}),
}


def webp(mode: str, size: tuple[int, int] = (301, 199), **save: object) -> bytes:
    pixels = bytes((i * 7) % 251 for i in range(size[0] * size[1] * len(mode)))
    buf = io.BytesIO()
    Image.frombytes(mode, size, pixels).save(buf, "WEBP", **save)
    return buf.getvalue()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_stamped_webp_reads_back_its_provenance_and_keeps_its_pixels(shape: str) -> None:
    mode, save = SHAPES[shape]
    original = webp(mode, **save)
    stamped = with_provenance(original, "webp", INFO)
    assert read_provenance(stamped) == INFO
    assert imaging.inspect(stamped).format == "webp"
    with Image.open(io.BytesIO(original)) as before, Image.open(io.BytesIO(stamped)) as after:
        assert (after.size, after.mode) == (before.size, before.mode)
        assert after.tobytes() == before.tobytes()
        assert b"promptdrop:request" in after.info["xmp"]  # other XMP readers see it too


def test_the_bitstream_is_copied_byte_for_byte() -> None:
    original = webp("RGB")
    frame = dict(riff_chunks(original))[b"VP8 "]
    assert dict(riff_chunks(with_provenance(original, "webp", INFO)))[b"VP8 "] == frame


def test_stamping_again_replaces_the_packet() -> None:
    once = with_provenance(webp("RGB"), "webp", INFO)
    twice = with_provenance(once, "webp", {**INFO, "promptdrop:index": "3"})
    assert read_provenance(twice)["promptdrop:index"] == "3"
    assert [c for c, _ in riff_chunks(twice)].count(b"XMP ") == 1


def test_a_webp_with_someone_elses_xmp_has_no_provenance_of_ours() -> None:
    assert read_provenance(webp("RGB", xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")) == {}


def test_a_packet_with_a_document_type_is_not_parsed() -> None:
    """No entity expansion from a hostile file: a DOCTYPE means it is not ours."""
    hostile = b'<!DOCTYPE x [<!ENTITY a "aaaa">]>' + xmp_packet(INFO)
    assert parse_packet(hostile) == {}
    assert parse_packet(xmp_packet(INFO)) == INFO


def test_truncated_or_foreign_data_is_refused_and_reads_as_nothing() -> None:
    stamped = with_provenance(webp("RGB"), "webp", INFO)
    with pytest.raises(imaging.ImageError):
        with_provenance(stamped[:40], "webp", INFO)
    assert read_provenance(stamped[:40]) == {}
    with pytest.raises(imaging.ImageError):
        with_provenance(b"RIFF\x04\0\0\0WEBP", "webp", INFO)


def test_a_key_outside_our_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="promptdrop:NAME"):
        with_provenance(webp("RGB"), "webp", {"Title": "x"})
