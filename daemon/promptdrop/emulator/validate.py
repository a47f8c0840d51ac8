"""Validation of generation requests, with the API's documented-style messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from promptdrop.emulator.images import SIZES

MODELS = ("gemini-2.5-flash-image-preview", "nano-banana")
MAX_PROMPT_CHARS = 1000
MAX_IMAGE_URLS = 14


class InvalidRequest(Exception):
    """A request the API answers with 400 invalid_request."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The documented error body for this refusal."""
        error: dict[str, Any] = {
            "code": "invalid_request",
            "message": self.message,
            "type": "invalid_request_error",
        }
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


@dataclass(frozen=True)
class SubmitRequest:
    model: str
    prompt: str
    size: str
    n: int | None
    image_urls: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_submit(raw: bytes) -> SubmitRequest:
    """Parse and check a POST /v1/images/generations body; raise InvalidRequest if wrong."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = _model(body)
    prompt = _prompt(body)
    n = body.get("n")
    # bool is an int in Python, and a quoted "1" is documented as an error.
    if "n" in body and (type(n) is not int or n != 1):
        raise InvalidRequest("The 'n' field must be the integer 1.", "n")
    size = body.get("size", "1:1")
    if size not in SIZES:
        raise InvalidRequest(f"The 'size' field must be one of: {', '.join(SIZES)}.", "size")
    return SubmitRequest(
        model=model,
        prompt=prompt,
        size=size,
        n=n,
        image_urls=_image_urls(body),
        metadata=_metadata(body),
    )


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("The 'model' field is required.", "model")
    if model not in MODELS:
        raise InvalidRequest(
            f"The model '{model}' is not supported. Use one of: {', '.join(MODELS)}.", "model"
        )
    return str(model)


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("The 'prompt' field is required.", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"The 'prompt' field must be at most {MAX_PROMPT_CHARS} characters "
            f"(got {len(prompt)}).",
            "prompt",
        )
    return prompt


def _image_urls(body: dict[str, Any]) -> tuple[str, ...]:
    image_urls = body.get("image_urls", [])
    if image_urls is None:
        image_urls = []
    if not isinstance(image_urls, list):
        raise InvalidRequest("The 'image_urls' field must be a list of URLs.", "image_urls")
    if len(image_urls) > MAX_IMAGE_URLS:
        raise InvalidRequest(
            f"The 'image_urls' field allows at most {MAX_IMAGE_URLS} images "
            f"(got {len(image_urls)}).",
            "image_urls",
        )
    for i, url in enumerate(image_urls):
        if not _is_http_url(url):
            raise InvalidRequest(
                f"image_urls[{i}] must be an http(s) URL string.", f"image_urls[{i}]"
            )
    return tuple(image_urls)


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("The 'metadata' field must be an object.", "metadata")
    if "resolution" in metadata and metadata["resolution"] != "1K":
        raise InvalidRequest('metadata.resolution must be "1K".', "metadata.resolution")
    if "orientation" in metadata and metadata["orientation"] not in ("landscape", "portrait"):
        raise InvalidRequest(
            'metadata.orientation must be "landscape" or "portrait".', "metadata.orientation"
        )
    return metadata


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
