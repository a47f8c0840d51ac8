"""A small multipart/form-data reader (the stdlib cgi module is gone in Python 3.13)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message


class MultipartError(ValueError):
    """The body is not multipart/form-data that can be read."""


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def _header_params(name: str, value: str) -> Message:
    msg = Message()
    msg[name] = value
    return msg


def parse_form_data(content_type: str | None, body: bytes) -> list[Part]:
    """Split a multipart/form-data body into its parts; raise MultipartError if it cannot."""
    if not content_type:
        raise MultipartError("the request is not multipart/form-data")
    ctype = _header_params("Content-Type", content_type)
    if ctype.get_content_type() != "multipart/form-data":
        raise MultipartError("the request is not multipart/form-data")
    boundary = ctype.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("the multipart boundary is missing")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    # The first delimiter may open the body without a preceding CRLF.
    chunks = (b"\r\n" + body).split(delimiter)
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a multipart part has no header end")
        headers = Message()
        for line in head.split(b"\r\n"):
            if not line.strip():
                continue
            key, colon, value = line.decode("utf-8", "replace").partition(":")
            if not colon:
                raise MultipartError("a multipart part has a malformed header")
            headers[key.strip()] = value.strip()
        disposition = headers.get("Content-Disposition")
        if disposition is None:
            raise MultipartError("a multipart part has no Content-Disposition")
        name = headers.get_param("name", header="Content-Disposition")
        filename = headers.get_param("filename", header="Content-Disposition")
        if not isinstance(name, str):
            raise MultipartError("a multipart part has no name")
        parts.append(
            Part(
                name=name,
                filename=filename if isinstance(filename, str) else None,
                content_type=headers.get("Content-Type"),
                data=data,
            )
        )
    else:
        raise MultipartError("the multipart body is not terminated")
    return parts
