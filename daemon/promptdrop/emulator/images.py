"""Result images: real pictures of the requested size whose content follows the prompt."""

from __future__ import annotations

import functools
import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont

# The documented sizes, in pixels.
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1792, 1024),
    "9:16": (1024, 1792),
    "4:3": (1365, 1024),
    "3:4": (1024, 1365),
    "3:2": (1536, 1024),
    "2:3": (1024, 1536),
}


def _colour(b: bytes) -> tuple[int, int, int]:
    return (b[0], b[1], b[2])


@functools.lru_cache(maxsize=8)
def _font(size: int = 28) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):  # Pillow built without FreeType: the small bitmap font
        return ImageFont.load_default()


def render(prompt: str, size: str, fmt: str) -> bytes:
    """Return encoded image bytes (fmt "png" or "jpeg") of exactly SIZES[size] pixels: the
    documented sizes of the default model."""
    return render_pixels(prompt, SIZES[size], fmt)


@functools.lru_cache(maxsize=64)
def render_pixels(
    prompt: str,
    pixels: tuple[int, int],
    fmt: str,
    quality: int | None = None,
    variant: int = 0,
) -> bytes:
    """Return encoded image bytes (fmt "png", "jpeg" or "webp") of exactly `pixels`
    (width, height).

    The bands, their colours and the disc come from a hash of the prompt (and of `variant`,
    the index of an image among a task's several), so different prompts give different bytes
    and the same prompt the same bytes. Flat colour keeps encoding cheap, even at 4096 pixels;
    results are cached. `quality` is the JPEG quality (default 85).
    """
    width, height = pixels
    seed = prompt if variant == 0 else f"{prompt}\n#{variant}"
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    img = Image.new("RGB", (width, height), _colour(digest[0:3]))
    draw = ImageDraw.Draw(img)
    bands = 3 + digest[3] % 5
    vertical = bool(digest[4] & 1)
    span = width if vertical else height
    for i in range(bands):
        start = span * i // bands
        end = span * (i + 1) // bands
        box = (start, 0, end, height) if vertical else (0, start, width, end)
        draw.rectangle(box, fill=_colour(digest[5 + 3 * i : 8 + 3 * i]))
    radius = min(width, height) // (3 + digest[26] % 3)
    cx, cy = width // 2, height // 2
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=_colour(digest[27:30]))
    # The prompt itself, so a person trying promptdrop sees which file made which image.
    # Scaled with the picture beyond the documented 1K sizes, so a 4K image is still legible.
    long_edge = max(width, height)
    scale = long_edge / 1024 if long_edge < 1024 else max(1.0, long_edge / 1792)
    text = "\n".join(textwrap.wrap(prompt, 60)[:6])
    band = min(round(230 * scale), height // 3)
    margin = round(24 * scale)
    draw.rectangle((0, height - band, width, height), fill=(255, 255, 255))
    draw.multiline_text(
        (margin, height - band + round(16 * scale)),
        text,
        fill=(20, 20, 20),
        font=_font(max(8, round(28 * scale))),
        spacing=round(6 * scale),
    )
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=1)
    elif fmt == "jpeg":
        img.save(buf, "JPEG", quality=85 if quality is None else quality)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=80, method=0)
    else:
        raise ValueError(f"cannot render format {fmt!r}")
    return buf.getvalue()
