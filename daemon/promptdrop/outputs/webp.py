"""Provenance inside a WebP image: an XMP packet in the RIFF container, written and read back.

WebP keeps metadata in an "XMP " chunk of its extended format (a VP8X header chunk first). A
simple WebP (one VP8 or VP8L chunk) is turned into the extended form by adding that header,
with the canvas size read from the bitstream; the bitstream itself is copied byte for byte,
never re-encoded. The packet holds one rdf:Description whose attributes are the provenance
keys in promptdrop's own XML namespace, so XMP readers (exiftool, image viewers) show them as
"promptdrop:prompt", "promptdrop:request"... Pure byte work: nothing here touches a file.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from xml.sax.saxutils import quoteattr

from promptdrop import imaging

NAMESPACE = "urn:promptdrop:provenance:1"
PREFIX = "promptdrop:"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XMP_FLAG = 0x04
_ALPHA_FLAG = 0x10
_XMP_LIMIT = 1024 * 1024  # a larger packet is not ours: not parsed


def riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(fourcc, payload) of every chunk of a WebP file; ImageError when it is not well formed."""
    if imaging.sniff(data) != "webp":
        raise imaging.ImageError("not a WebP image")
    (size,) = struct.unpack("<I", data[4:8])
    end = 8 + size
    if end > len(data) or size < 4:
        raise imaging.ImageError("the WebP data is truncated")
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise imaging.ImageError("the WebP data is truncated")
        fourcc = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body_end = pos + 8 + length
        if body_end > end:
            raise imaging.ImageError("the WebP data is truncated")
        yield fourcc, data[pos + 8 : body_end]
        pos = body_end + (length & 1)  # chunks are padded to an even size


def with_xmp(data: bytes, info: Mapping[str, str]) -> bytes:
    """The WebP image with `info` (keys "promptdrop:NAME") as its XMP packet, replacing any
    earlier one. Raises ImageError for data that is not a well-formed WebP, ValueError for a
    key outside promptdrop's namespace."""
    chunks = list(riff_chunks(data))
    if not chunks:
        raise imaging.ImageError("the WebP data has no image")
    kept = [(c, body) for c, body in chunks if c != b"XMP "]
    first, body = kept[0]
    if first == b"VP8X":
        flags = body[0] | _XMP_FLAG
        kept[0] = (first, bytes([flags]) + body[1:])
    else:
        kept.insert(0, (b"VP8X", _vp8x_for(first, body)))
    kept.append((b"XMP ", xmp_packet(info)))
    payload = b"WEBP" + b"".join(_chunk(c, b) for c, b in kept)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def read_xmp(data: bytes) -> dict[str, str]:
    """The provenance keys of the image's XMP packet; {} when there is none."""
    for fourcc, body in riff_chunks(data):
        if fourcc == b"XMP ":
            return parse_packet(body)
    return {}


def xmp_packet(info: Mapping[str, str]) -> bytes:
    """An XMP packet holding each "promptdrop:NAME" key as an attribute in our namespace."""
    attrs = []
    for key, value in info.items():
        name = key.removeprefix(PREFIX)
        if not key.startswith(PREFIX) or not name.isidentifier():
            raise ValueError(f"WebP provenance keys must be {PREFIX}NAME: {key!r}")
        # XML 1.0 cannot carry most control characters; provenance is descriptive.
        clean = "".join(ch if ch >= " " or ch in "\t\n\r" else "\ufffd" for ch in value)
        attrs.append(f" promptdrop:{name}={quoteattr(clean)}")
    text = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        f'<rdf:RDF xmlns:rdf="{_RDF}">'
        f'<rdf:Description rdf:about="" xmlns:promptdrop="{NAMESPACE}"{"".join(attrs)}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    )
    return text.encode("utf-8")


def parse_packet(body: bytes) -> dict[str, str]:
    """The attributes in our namespace of an XMP packet's descriptions; {} for anything else."""
    # No document type, so no entities: a hostile file cannot make the parser expand any.
    if len(body) > _XMP_LIMIT or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return {}
    try:
        root = ET.fromstring(body.decode("utf-8"))
    except (UnicodeDecodeError, ET.ParseError):
        return {}
    found: dict[str, str] = {}
    for element in root.iter(f"{{{_RDF}}}Description"):
        for name, value in element.attrib.items():
            if name.startswith(f"{{{NAMESPACE}}}"):
                found[PREFIX + name.split("}", 1)[1]] = value
    return found


def _vp8x_for(fourcc: bytes, body: bytes) -> bytes:
    """The VP8X header chunk's payload for a simple WebP whose image chunk is given."""
    flags = _XMP_FLAG
    if fourcc == b"VP8 ":
        # Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
        if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
            raise imaging.ImageError("the WebP VP8 data is malformed")
        raw_w, raw_h = struct.unpack("<HH", body[6:10])
        width, height = int(raw_w) & 0x3FFF, int(raw_h) & 0x3FFF
    elif fourcc == b"VP8L":
        # Signature 0x2f, then 14 bits of width-1, 14 of height-1 and the alpha bit.
        if len(body) < 5 or body[0] != 0x2F:
            raise imaging.ImageError("the WebP VP8L data is malformed")
        bits = int.from_bytes(body[1:5], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if bits >> 28 & 1:
            flags |= _ALPHA_FLAG
    else:
        raise imaging.ImageError("the WebP data does not start with an image")
    if not width or not height:
        raise imaging.ImageError("the WebP image has no size")
    return (
        bytes([flags, 0, 0, 0])
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )


def _chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")
