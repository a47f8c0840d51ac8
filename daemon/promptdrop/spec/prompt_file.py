"""The prompt file model: the keys of a NAME.prompt.toml, as written (before folder defaults).

Field descriptions are the text of `promptdrop schema prompt`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from promptdrop.config.options import Options
from promptdrop.filecheck.fields import (
    MAX_COUNT,
    MAX_REFERENCES,
    Model,
    Orientation,
    Resolution,
    Size,
)


class PromptFile(BaseModel):
    """The keys of a NAME.prompt.toml file, as written (before folder defaults apply)."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop prompt file")

    prompt: str = Field(
        min_length=1,
        description="What the image should show. Required. nano-banana (the default model) "
        "takes at most 1000 characters; the other models state no limit. A folder 'style' "
        "from .promptdrop.toml is appended after a blank line and counts too.",
    )
    size: Size | None = Field(
        default=None,
        description="Aspect ratio, 1:1 by default. nano-banana takes 1:1, 16:9, 9:16, 4:3, 3:4, "
        "3:2 and 2:3; the other models add 4:5, 5:4 and 21:9, and some 1:4, 4:1, 1:8 and 8:1 "
        "(`promptdrop models` lists them per model).",
    )
    model: Model | None = Field(
        default=None,
        description="Which model draws the image: gemini-2.5-flash-image-preview (nano-banana, "
        "the default), or another model of the family, by id or alias (`promptdrop models`).",
    )
    resolution: Resolution | None = Field(
        default=None,
        description="How big the image is: 0.5K, 1K, 2K or 4K (a long edge of about 512, 1024, "
        "2048 or 4096 pixels), as the model offers; 1K by default. nano-banana offers 1K only.",
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
        "the references of .promptdrop.toml. gemini-2.5-flash-image-official takes at most 3.",
    )
    options: Options | None = Field(
        default=None,
        description="The model's extra settings ([options]): output format, temperature, "
        "safety settings, thinking, Google search... Each is taken by some models only.",
    )
