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


# The end chunk every PNG closes with: no data, so always the same 12 bytes.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


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
    """Check that the bytes are a whole image and return its format and size; raise ImageError
    if they are not.

    A truncated file, or one whose signature lies about its content, fails here. A PNG is
    checked by its structure (every chunk present, every chunk's CRC right, through the end
    chunk) rather than decoded, which is several times faster and refuses the same truncated
    or damaged downloads; JPEG, WebP and GIF are decoded whole, since their structure alone
    says little. CPU-bound (milliseconds for a large image): from async code, call it in a
    worker thread.
    """
    fmt = sniff(data)
    if fmt is None:
        raise ImageError("not a JPEG, PNG, WebP or GIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                size = img.size
                if (img.format or "").lower() != fmt:
                    raise ImageError(f"the {fmt.upper()} signature does not match its content")
                if fmt == "png":
                    img.verify()  # stops at the end chunk without reading its checksum
                    if _PNG_END not in data:
                        raise ImageError("the PNG data is truncated (its end chunk is cut off)")
                else:
                    img.load()
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"the {fmt.upper()} data does not decode ({exc})") from None
    return ImageInfo(format=fmt, width=size[0], height=size[1])
