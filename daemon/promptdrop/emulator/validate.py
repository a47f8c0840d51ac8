"""Validation of generation requests, per model, with the API's documented-style messages."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from promptdrop.emulator.metadata import check_metadata
from promptdrop.emulator.models import BY_NAME, MODELS, Model
from promptdrop.emulator.refusals import InvalidRequest

__all__ = ["InvalidRequest", "SubmitRequest", "parse_submit"]

# The docs' image formats by imageOutputOptions.mimeType (official models only).
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


@dataclass(frozen=True)
class SubmitRequest:
    model: str  # as sent: an id or an alias
    prompt: str
    size: str
    n: int | None  # as sent; None when omitted
    image_urls: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    row: Model = MODELS[0]
    client_business_id: str | None = None
    # The whole body as it was submitted.
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> int:
        """How many images the task makes."""
        return 1 if self.n is None else self.n

    @property
    def resolution(self) -> str | None:
        resolution = self.metadata.get("resolution")
        return resolution if isinstance(resolution, str) else None

    @property
    def pixels(self) -> tuple[int, int]:
        """The pixel size of each result image."""
        return self.row.dimensions(self.size, self.resolution)

    @property
    def output_format(self) -> str | None:
        """The format imageOutputOptions.mimeType asks for (None: the emulator's choice)."""
        options = self.metadata.get("imageOutputOptions")
        if not isinstance(options, dict):
            return None
        return _FORMATS.get(options.get("mimeType", ""))

    @property
    def quality(self) -> int | None:
        """imageOutputOptions.compressionQuality, when given."""
        options = self.metadata.get("imageOutputOptions")
        quality = options.get("compressionQuality") if isinstance(options, dict) else None
        return quality if isinstance(quality, int) else None


def parse_submit(raw: bytes) -> SubmitRequest:
    """Parse and check a POST /v1/images/generations body; raise InvalidRequest if wrong."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = _model(body)
    row = BY_NAME[model]
    prompt = _prompt(body, row)
    n = _n(body, row)
    size = body.get("size", "1:1")
    if size not in row.sizes:
        raise InvalidRequest(f"The 'size' field must be one of: {', '.join(row.sizes)}.", "size")
    image_urls = _image_urls(body, row)
    metadata = _metadata(body, row)
    business_id = _business_id(body, metadata)
    return SubmitRequest(
        model=model,
        prompt=prompt,
        size=size,
        n=n,
        image_urls=image_urls,
        metadata=metadata,
        row=row,
        client_business_id=business_id,
        body=copy.deepcopy(body),
    )


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("The 'model' field is required.", "model")
    if not isinstance(model, str) or model not in BY_NAME:
        raise InvalidRequest(
            f"The model '{model}' is not supported. Use one of: {', '.join(BY_NAME)}.", "model"
        )
    return model


def _prompt(body: dict[str, Any], row: Model) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("The 'prompt' field is required.", "prompt")
    # Only the default model's page caps the prompt; for the others the request body limit
    # (serving.MAX_BODY_BYTES) is the only guard, as the upstream token limit is not ours.
    limit = row.max_prompt_chars
    if limit is not None and len(prompt) > limit:
        raise InvalidRequest(
            f"The 'prompt' field must be at most {limit} characters (got {len(prompt)}).",
            "prompt",
        )
    return prompt


def _n(body: dict[str, Any], row: Model) -> int | None:
    if "n" not in body:
        return None
    n = body["n"]
    # bool is an int in Python, and a quoted "1" is documented as an error.
    if type(n) is not int or not 1 <= n <= row.max_n:
        if row.max_n == 1:
            raise InvalidRequest("The 'n' field must be the integer 1.", "n")
        raise InvalidRequest(f"The 'n' field must be an integer from 1 to {row.max_n}.", "n")
    return n


def _image_urls(body: dict[str, Any], row: Model) -> tuple[str, ...]:
    image_urls = body.get("image_urls", [])
    if image_urls is None:
        image_urls = []
    if not isinstance(image_urls, list):
        raise InvalidRequest("The 'image_urls' field must be a list of URLs.", "image_urls")
    limit = row.max_references
    if len(image_urls) > limit:
        raise InvalidRequest(
            f"The 'image_urls' field allows at most {limit} images for the model "
            f"'{row.id}' (got {len(image_urls)}).",
            "image_urls",
        )
    urls = []
    for i, item in enumerate(image_urls):
        # The non-official pages declare object[] with a required `url`, and their own
        # examples send plain strings: both are taken. The official pages declare string[].
        url = item
        if row.reference_objects and isinstance(item, dict) and set(item) == {"url"}:
            url = item["url"]
        if not _is_http_url(url):
            shape = ' or an object {"url": ...}' if row.reference_objects else ""
            raise InvalidRequest(
                f"image_urls[{i}] must be an http(s) URL string{shape}.", f"image_urls[{i}]"
            )
        urls.append(str(url))
    return tuple(urls)


def _metadata(body: dict[str, Any], row: Model) -> dict[str, Any]:
    metadata = body.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("The 'metadata' field must be an object.", "metadata")
    check_metadata(row, metadata)
    return metadata


def _business_id(body: dict[str, Any], metadata: dict[str, Any]) -> str | None:
    """The client's own id for the task: top level (preferred by the docs) or in metadata."""
    if "client_business_id" in body:
        value = body["client_business_id"]
        if not isinstance(value, str):
            raise InvalidRequest(
                "The 'client_business_id' field must be a string.", "client_business_id"
            )
        return value
    value = metadata.get("client_business_id")
    return value if isinstance(value, str) else None


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
