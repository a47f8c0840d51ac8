"""The folder defaults model: the keys of a `.promptdrop.toml` and of a rule's `[rules.defaults]`.

It lives with the rules because a rules file embeds it; `spec.folder_defaults` reads the
`.promptdrop.toml` files and layers them.
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


class FolderDefaults(BaseModel):
    """Defaults from a `.promptdrop.toml` (or a rule's `[rules.defaults]`); every key optional."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop folder defaults")

    size: Size | None = Field(
        default=None, description="Default aspect ratio: 1:1, 16:9, 9:16, 4:3, 3:4, 3:2 or 2:3."
    )
    model: Model | None = Field(
        default=None,
        description="Default model: gemini-2.5-flash-image-preview or its alias nano-banana.",
    )
    count: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="Default number of images, 1 to 10."
    )
    orientation: Orientation | None = Field(
        default=None, description="Default orientation hint: landscape or portrait."
    )
    style: str | None = Field(
        default=None,
        max_length=MAX_PROMPT_CHARS,
        description="Text appended (after a blank line) to every prompt in this folder and its "
        "subfolders. The prompt plus style must stay within 1000 characters. An empty text "
        "switches off a style inherited from a folder above.",
    )
    references: list[str] | None = Field(
        default=None,
        max_length=MAX_REFERENCES,
        description="Reference images for every prompt here that lists none of its own: paths "
        "relative to the folder of this defaults file, or http(s) web addresses. At most 14.",
    )
