"""imaging.inspect: whole images pass, cut-off or damaged ones are refused, whatever the format."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from promptdrop import imaging


def _image(fmt: str, size: tuple[int, int] = (256, 256)) -> bytes:
    # Noise, so the compressed data is long and a cut lands inside the image data. Seeded: the
    # truncation points below are test ids, and every xdist worker must collect the same ones.
    noise = random.Random(f"{fmt}{size}").randbytes(size[0] * size[1] * 3)
    img = Image.frombytes("RGB", size, noise)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


PNG = _image("PNG")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_a_whole_image_passes_with_its_format_and_size(fmt: str) -> None:
    info = imaging.inspect(_image(fmt, (300, 200)))
    assert (info.format, info.width, info.height) == (fmt.lower(), 300, 200)


@pytest.mark.parametrize("cut", [1, 4, 11, 12, 13, 100, len(PNG) // 2, len(PNG) - 60])
def test_a_truncated_png_is_refused(cut: int) -> None:
    # Every cut: the end chunk's checksum, the end chunk, the last image data, half the file,
    # and everything after the header.
    with pytest.raises(imaging.ImageError, match="PNG data"):
        imaging.inspect(PNG[:-cut])


def test_a_png_with_a_damaged_byte_in_its_image_data_is_refused() -> None:
    damaged = bytearray(PNG)
    damaged[len(PNG) // 2] ^= 0xFF
    with pytest.raises(imaging.ImageError, match="does not decode"):
        imaging.inspect(bytes(damaged))


def test_a_png_followed_by_extra_bytes_still_passes() -> None:
    assert imaging.inspect(PNG + b"trailing bytes some servers add").format == "png"


def test_a_truncated_jpeg_is_refused() -> None:
    jpeg = _image("JPEG")
    with pytest.raises(imaging.ImageError, match="JPEG data does not decode"):
        imaging.inspect(jpeg[: len(jpeg) // 2])


def test_a_png_signature_in_front_of_other_data_is_refused() -> None:
    with pytest.raises(imaging.ImageError):
        imaging.inspect(b"\x89PNG\r\n\x1a\n" + _image("JPEG"))


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(imaging.ImageError, match="not a JPEG, PNG, WebP or GIF image"):
        imaging.inspect(b"<html>not found</html>")
