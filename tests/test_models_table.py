"""The model facts live in one place, promptdrop.capabilities: these tests keep every copy of them
(the pydantic types, the README's model table, `promptdrop models`) equal to it, and pin the
rows to what toapis-models.md says of each model."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import get_args

import pytest

from promptdrop import capabilities as cap
from promptdrop.commands.models import markdown_table, print_models
from promptdrop.config.options import Options, SafetySetting
from promptdrop.filecheck import fields

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_literal_types_list_exactly_the_table() -> None:
    assert get_args(fields.Size) == cap.ALL_SIZES
    assert get_args(fields.Model) == cap.MODEL_NAMES
    assert get_args(fields.Resolution) == cap.RESOLUTIONS
    assert get_args(fields.OutputFormat) == cap.OUTPUT_FORMATS
    assert get_args(fields.SafetyCategory) == cap.SAFETY_CATEGORIES
    assert get_args(fields.SafetyThreshold) == cap.SAFETY_THRESHOLDS
    assert fields.CANONICAL_MODEL == cap.DEFAULT_MODEL
    assert fields.MAX_REFERENCES == cap.MAX_ANY_REFERENCES
    assert cap.row_of(None).prompt_limit == fields.MAX_PROMPT_CHARS


def test_the_options_model_has_one_field_per_option_with_its_range_and_choices() -> None:
    assert tuple(Options.model_fields) == tuple(cap.OPTIONS)
    props = Options.model_json_schema()["properties"]
    for name, opt in cap.OPTIONS.items():
        prop = props[name]
        flat = prop.get("anyOf", [prop])[0]
        if opt.minimum is not None:
            assert flat["minimum"] == opt.minimum, name
            assert flat["maximum"] == opt.maximum, name
        if opt.choices:
            assert tuple(flat["enum"]) == opt.choices, name
        assert set(flat) & {"type", "enum", "$ref", "items"}, name
    assert tuple(SafetySetting.model_fields) == ("category", "threshold")
    assert {n: o.choices for n, o in cap.OPTIONS.items() if o.choices} == fields.OPTION_CHOICES


def test_the_readme_model_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- models-table:start -->\n(.*?)<!-- models-table:end -->", text, re.S)
    assert found, "the README lost its models-table markers"
    assert found[1] == markdown_table(), (
        "the README's model table differs from promptdrop.capabilities; paste the output of "
        "promptdrop.commands.models.markdown_table() between the markers"
    )


def test_promptdrop_models_prints_every_name_and_fact() -> None:
    out = io.StringIO()
    assert print_models(out) == 0
    text = out.getvalue()
    for row in cap.MODELS:
        for name in row.names:
            assert name in text
        assert ", ".join(row.sizes) in text
    assert "1K (default), 2K, 4K" in text


# What toapis-models.md section 1 says, written out once more by hand: a slip in the table
# shows here as a difference from the docs, not as a mirrored mistake.
DOCS = {
    "gemini-2.5-flash-image-preview": (("nano-banana",), 7, (), "1K", True, 14, 1000, True),
    "gemini-2.5-flash-image-official": (
        ("nano-banana-official",),
        10,
        (),
        None,
        False,
        3,
        None,
        True,
    ),
    "gemini-3-pro-image-preview": (
        ("nano-banana-pro",),
        10,
        ("2K", "4K"),
        "1K",
        True,
        14,
        None,
        True,
    ),
    "gemini-3-pro-image-preview-official": (
        ("nano-banana-pro-official",),
        10,
        ("2K", "4K"),
        "1K",
        False,
        14,
        None,
        True,
    ),
    "gemini-3.1-flash-image-preview": ((), 14, ("0.5K", "2K", "4K"), "1K", False, 14, None, False),
    "gemini-3.1-flash-image-preview-official": (
        ("nano-banana-2-official", "nano-banana-2-lite-official"),
        12,
        ("2K", "4K"),
        "1K",
        False,
        14,
        None,
        True,
    ),
}


@pytest.mark.parametrize("model", list(DOCS))
def test_each_row_says_what_its_page_says(model: str) -> None:
    aliases, n_sizes, more_res, default, orientation, refs, limit, n_fixed = DOCS[model]
    row = cap.row_of(model)
    assert set(row.aliases) == set(aliases)
    assert len(row.sizes) == n_sizes == len(set(row.sizes))
    assert row.default_resolution == default
    assert set(row.resolutions) == ({default} if default else set()) | set(more_res)
    assert (row.orientation, row.max_references, row.prompt_limit, row.n_fixed) == (
        orientation,
        refs,
        limit,
        n_fixed,
    )


def test_the_documented_option_sets() -> None:
    official = {
        "output_format",
        "compression_quality",
        "temperature",
        "top_p",
        "max_output_tokens",
        "person_generation",
        "safety_settings",
    }
    thinking = {"thinking_budget", "thinking_level"}
    got = {row.id: set(row.options) for row in cap.MODELS}
    assert got == {
        "gemini-2.5-flash-image-preview": set(),
        "gemini-2.5-flash-image-official": official,
        "gemini-3-pro-image-preview": set(),
        "gemini-3-pro-image-preview-official": official | thinking,
        "gemini-3.1-flash-image-preview": {"google_search", "google_image_search"},
        "gemini-3.1-flash-image-preview-official": official | thinking,
    }
    assert "1:8" in cap.row_of("gemini-3.1-flash-image-preview").sizes
    assert "1:8" not in cap.row_of("gemini-3.1-flash-image-preview-official").sizes
    assert "21:9" not in cap.row_of("nano-banana").sizes
