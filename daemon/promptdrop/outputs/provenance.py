"""Provenance inside the image: PNG iTXt chunks, JPEG comments and WebP XMP, written and read
back.

Pure byte work: the pixel data is never re-encoded, and nothing here touches a file.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping

from promptdrop import imaging
from promptdrop.outputs import webp

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_LIMIT = 1024 * 1024


def with_provenance(data: bytes, fmt: str, info: Mapping[str, str]) -> bytes:
    """Return the image with `info` embedded as metadata; the pixel data is not re-encoded.

    PNG: one uncompressed iTXt chunk per key, right after IHDR (earlier text with the same keys
    is dropped). JPEG: one COM segment holding a UTF-8 JSON object, after SOI and the APPn
    segments that must come first (an earlier promptdrop comment is dropped). WebP: an XMP
    packet in the RIFF container (`outputs.webp`; keys must be "promptdrop:NAME"). Other
    formats are returned unchanged. Raises imaging.ImageError when the bytes are not a
    well-formed image of format `fmt`, ValueError for an unusable key.
    """
    if imaging.sniff(data) != fmt:
        raise imaging.ImageError(f"the data is not a {fmt.upper()} image")
    if fmt == "png":
        return _png_with_text(data, info)
    if fmt == "jpeg":
        return _jpeg_with_comment(data, info)
    if fmt == "webp":
        return webp.with_xmp(data, info)
    return data


def read_provenance(data: bytes) -> dict[str, str]:
    """The metadata `with_provenance` embeds, read back; {} when there is none or on bad data.

    For PNG every text chunk is returned (ours have the keys the engine chose); for JPEG the
    JSON-object comments are merged; for WebP the keys of our XMP namespace are returned.
    """
    try:
        fmt = imaging.sniff(data)
        if fmt == "png":
            return _png_read_text(data)
        if fmt == "jpeg":
            return _jpeg_read_comments(data)
        if fmt == "webp":
            return webp.read_xmp(data)
    except (ValueError, struct.error, zlib.error):
        pass
    return {}


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of every chunk up to IEND: data[start:end] is the whole chunk."""
    if not data.startswith(_PNG_SIGNATURE):
        raise imaging.ImageError("not a PNG image")
    chunks: list[tuple[bytes, int, int]] = []
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise imaging.ImageError("the PNG data is truncated")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise imaging.ImageError("the PNG data is truncated")
        chunks.append((ctype, pos, end))
        pos = end
        if ctype == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise imaging.ImageError("the PNG data is not complete")
    return chunks


def _png_text_key(ctype: bytes, body: bytes) -> str | None:
    if ctype not in (b"tEXt", b"iTXt", b"zTXt"):
        return None
    return body.split(b"\0", 1)[0].decode("latin-1")


def _png_with_text(data: bytes, info: Mapping[str, str]) -> bytes:
    chunks = _png_chunks(data)
    new: list[bytes] = []
    for key, value in info.items():
        try:
            kbytes = key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"PNG text keys must be Latin-1: {key!r}") from None
        if not 1 <= len(kbytes) <= 79 or b"\0" in kbytes:
            raise ValueError(f"PNG text keys must be 1-79 characters without NUL: {key!r}")
        # NUL cannot be stored in iTXt text; provenance is descriptive, so U+FFFD is fine.
        text = value.replace("\0", "\ufffd").encode("utf-8", "replace")
        # keyword NUL, compression flag 0 and method 0, empty language tag NUL, empty
        # translated keyword NUL, then the text.
        body = kbytes + b"\0" + b"\0\0" + b"\0" + b"\0" + text
        new.append(
            struct.pack(">I", len(body))
            + b"iTXt"
            + body
            + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF)
        )
    out = [data[: chunks[0][2]], *new]
    for ctype, start, end in chunks[1:]:
        if _png_text_key(ctype, data[start + 8 : end - 4]) in info:
            continue
        out.append(data[start:end])
    return b"".join(out)


def _png_read_text(data: bytes) -> dict[str, str]:
    result: dict[str, str] = {}
    for ctype, start, end in _png_chunks(data):
        body = data[start + 8 : end - 4]
        key = _png_text_key(ctype, body)
        if key is None:
            continue
        rest = body.split(b"\0", 1)[1] if b"\0" in body else b""
        if ctype == b"tEXt":
            result[key] = rest.decode("latin-1")
        elif ctype == b"zTXt":
            result[key] = _inflate(rest[1:]).decode("latin-1")
        else:
            compressed = rest[:1] == b"\x01"
            _lang, _translated, text = rest[2:].split(b"\0", 2)
            result[key] = (_inflate(text) if compressed else text).decode("utf-8", "replace")
    return result


def _inflate(data: bytes) -> bytes:
    # Bounded, so a hostile file cannot make `promptdrop status` inflate gigabytes.
    return zlib.decompressobj().decompress(data, _PNG_TEXT_LIMIT)


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Header segments (marker, start, end) between SOI and SOS, and where SOS starts."""
    if not data.startswith(b"\xff\xd8"):
        raise imaging.ImageError("not a JPEG image")
    segments: list[tuple[int, int, int]] = []
    pos = 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise imaging.ImageError("the JPEG header is malformed")
        while data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
            if pos + 4 > len(data):
                raise imaging.ImageError("the JPEG header is malformed")
        marker = data[pos + 1]
        if marker == 0xDA:
            return segments, pos
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise imaging.ImageError("the JPEG header is truncated")
        segments.append((marker, pos, end))
        pos = end


def _jpeg_comment_object(body: bytes) -> dict[str, str] | None:
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, dict) and all(isinstance(v, str) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    return None


def _jpeg_with_comment(data: bytes, info: Mapping[str, str]) -> bytes:
    segments, sos = _jpeg_segments(data)
    payload = json.dumps(dict(info), ensure_ascii=False, sort_keys=True).encode("utf-8", "replace")
    if len(payload) > 0xFFFF - 2:
        raise ValueError("provenance is too large for a JPEG comment (64 KiB)")
    comment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    out = [data[:2]]
    inserted = False
    for marker, start, end in segments:
        # APP0 (JFIF) and APP1 (Exif) must directly follow SOI for strict readers.
        if not inserted and not 0xE0 <= marker <= 0xEF:
            out.append(comment)
            inserted = True
        if marker == 0xFE:
            old = _jpeg_comment_object(data[start + 4 : end])
            if old is not None and old.keys() & info.keys():
                continue
        out.append(data[start:end])
    if not inserted:
        out.append(comment)
    out.append(data[sos:])
    return b"".join(out)


def _jpeg_read_comments(data: bytes) -> dict[str, str]:
    segments, _sos = _jpeg_segments(data)
    result: dict[str, str] = {}
    for marker, start, end in segments:
        if marker == 0xFE:
            result.update(_jpeg_comment_object(data[start + 4 : end]) or {})
    return result
