"""Image bytes: what format they really are, and whether they decode.

Shared by the prompt-file checks (references), the API client (results), the outputs
module (file extension, provenance) and the emulator (uploads), so every part of
promptdrop agrees on what counts as an image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

# Formats the generation endpoint accepts as references, and that results come in.
GENERATION_FORMATS = frozenset({"png", "jpeg", "webp"})
# The upload endpoint also takes GIF (generation then refuses it).
UPLOAD_FORMATS = GENERATION_FORMATS | {"gif"}

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}


class ImageError(ValueError):
    """The bytes are not a complete image of a known format."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def sniff(data: bytes) -> str | None:
    """Return the image format named by the leading bytes, or None when unknown.

    Only the signature is read: use `inspect` to know the image also decodes.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def inspect(data: bytes) -> ImageInfo:
    """Decode the whole image and return its format and size; raise ImageError if it fails.

    A truncated file, or one whose signature lies about its content, fails here.
    """
    fmt = sniff(data)
    if fmt is None:
        raise ImageError("not a JPEG, PNG, WebP or GIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                size = img.size
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise ImageError(f"the {fmt.upper()} data does not decode ({exc})") from None
    return ImageInfo(format=fmt, width=size[0], height=size[1])
