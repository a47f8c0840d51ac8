"""The folder defaults model: the keys of a `.promptdrop.toml` and of a rule's `[rules.defaults]`.

It lives with the rules because a rules file embeds it; `spec.folder_defaults` reads the
`.promptdrop.toml` files and layers them.
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


class FolderDefaults(BaseModel):
    """Defaults from a `.promptdrop.toml` (or a rule's `[rules.defaults]`); every key optional."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop folder defaults")

    size: Size | None = Field(
        default=None,
        description="Default aspect ratio (one the model takes; see the prompt file's size).",
    )
    model: Model | None = Field(
        default=None,
        description="Default model, by id or alias (`promptdrop models` lists them).",
    )
    resolution: Resolution | None = Field(
        default=None, description="Default resolution: 0.5K, 1K, 2K or 4K, as the model offers."
    )
    count: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="Default number of images, 1 to 10."
    )
    orientation: Orientation | None = Field(
        default=None, description="Default orientation hint: landscape or portrait."
    )
    style: str | None = Field(
        default=None,
        description="Text appended (after a blank line) to every prompt in this folder and its "
        "subfolders. The prompt plus style must stay within the model's prompt limit (1000 "
        "characters for nano-banana). An empty text "
        "switches off a style inherited from a folder above.",
    )
    references: list[str] | None = Field(
        default=None,
        max_length=MAX_REFERENCES,
        description="Reference images for every prompt here that lists none of its own: paths "
        "relative to the folder of this defaults file, or http(s) web addresses. At most 14 "
        "(3 for gemini-2.5-flash-image-official).",
    )
    options: Options | None = Field(
        default=None,
        description="Default [options], merged key by key under the prompt file's own. An "
        "inherited option the prompt's model does not take is left out, not an error.",
    )
