"""The prompt file model: the keys of a NAME.prompt.toml, as written (before folder defaults).

Field descriptions are the text of `promptdrop schema prompt`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from promptdrop.filecheck.fields import (
    MAX_COUNT,
    MAX_PROMPT_CHARS,
    MAX_REFERENCES,
    Model,
    Orientation,
    Size,
)


class PromptFile(BaseModel):
    """The keys of a NAME.prompt.toml file, as written (before folder defaults apply)."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop prompt file")

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What the image should show. Required, 1 to 1000 characters; a folder "
        "'style' from .promptdrop.toml is appended after a blank line and counts too.",
    )
    size: Size | None = Field(
        default=None,
        description="Aspect ratio: 1:1 (the default), 16:9, 9:16, 4:3, 3:4, 3:2 or 2:3.",
    )
    model: Model | None = Field(
        default=None,
        description="gemini-2.5-flash-image-preview (the default) or its alias nano-banana.",
    )
    count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="How many images to make, 1 to 10 (default 1); each is one paid API task.",
    )
    orientation: Orientation | None = Field(
        default=None, description="Optional hint for the API: landscape or portrait."
    )
    references: list[str] | None = Field(
        default=None,
        max_length=MAX_REFERENCES,
        description="Up to 14 reference images: paths relative to this file's folder (JPEG, PNG "
        "or WebP, at most 10 MB, inside the watched folder) or http(s) web addresses. Replaces "
        "the references of .promptdrop.toml.",
    )
