"""The `[options]` table: the documented extra settings some models take.

Each field's description says which models take it (from `promptdrop.capabilities`); whether
the chosen model takes it is checked per model (`filecheck.per_model`), and where it goes in
the request is `capabilities.api_metadata`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from promptdrop.capabilities import OPTIONS, models_taking
from promptdrop.filecheck.fields import (
    OutputFormat,
    PersonGeneration,
    SafetyCategory,
    SafetyThreshold,
    ThinkingLevel,
)


def _about(name: str) -> str:
    takers = models_taking(lambda row: name in row.options)
    return (
        f"{OPTIONS[name].help[0].upper()}{OPTIONS[name].help[1:]}. Taken by: {', '.join(takers)}."
    )


class SafetySetting(BaseModel):
    """One safety filter: a harm category and how strictly it blocks."""

    model_config = ConfigDict(strict=True, extra="forbid", title="safety setting")

    category: SafetyCategory = Field(description="The harm category.")
    threshold: SafetyThreshold = Field(description="From what level this category is blocked.")


class Options(BaseModel):
    """Extra settings for the models that take them; every key optional."""

    model_config = ConfigDict(strict=True, extra="forbid", title="options")

    output_format: OutputFormat | None = Field(default=None, description=_about("output_format"))
    compression_quality: int | None = Field(
        default=None, ge=0, le=100, description=_about("compression_quality")
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description=_about("temperature"))
    top_p: float | None = Field(default=None, ge=0, le=1, description=_about("top_p"))
    max_output_tokens: int | None = Field(
        default=None, ge=1, le=32768, description=_about("max_output_tokens")
    )
    person_generation: PersonGeneration | None = Field(
        default=None, description=_about("person_generation")
    )
    safety_settings: list[SafetySetting] | None = Field(
        default=None, min_length=1, description=_about("safety_settings")
    )
    thinking_budget: int | None = Field(
        default=None, ge=0, le=24576, description=_about("thinking_budget")
    )
    thinking_level: ThinkingLevel | None = Field(default=None, description=_about("thinking_level"))
    google_search: bool | None = Field(default=None, description=_about("google_search"))
    google_image_search: bool | None = Field(
        default=None, description=_about("google_image_search")
    )
