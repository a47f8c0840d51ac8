"""Output, version and note names: pure functions of paths, checked as tables (no files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptdrop.outputs.naming import (
    NAME_MAX_BYTES,
    fit_name,
    is_own_temp,
    note_path,
    output_path,
    source_stem,
    versioned_name,
    versioned_path,
)


@pytest.mark.parametrize(
    ("source", "stem"),
    [
        ("poster.prompt.toml", "poster"),
        ("/w/a/poster.prompt.toml", "poster"),
        ("my.poster.prompt.toml", "my.poster"),
        (".prompt.toml", "prompt"),
        ("notes.toml", "notes"),
        (".hidden", ".hidden"),
        ("plain", "plain"),
        ("Katze 🚀.prompt.toml", "Katze 🚀"),
    ],
)
def test_a_prompt_file_gives_its_outputs_its_stem(source: str, stem: str) -> None:
    assert source_stem(source) == stem


@pytest.mark.parametrize(
    ("source", "index", "count", "fmt", "expected"),
    [
        ("/w/poster.prompt.toml", 1, 1, "png", "/w/poster.png"),
        ("/w/poster.prompt.toml", 1, 1, "jpeg", "/w/poster.jpg"),
        ("/w/poster.prompt.toml", 1, 1, "webp", "/w/poster.webp"),
        ("/w/poster.prompt.toml", 1, 1, "gif", "/w/poster.gif"),
        ("/w/poster.prompt.toml", 1, 3, "png", "/w/poster-1.png"),
        ("/w/poster.prompt.toml", 3, 3, "jpeg", "/w/poster-3.jpg"),
        ("/w/sub/.prompt.toml", 2, 2, "png", "/w/sub/prompt-2.png"),
        ("poster.prompt.toml", 1, 1, "png", "poster.png"),
    ],
)
def test_output_names_follow_index_count_and_real_format(
    source: str, index: int, count: int, fmt: str, expected: str
) -> None:
    assert output_path(source, index, count, fmt) == Path(expected)


@pytest.mark.parametrize(
    ("index", "count", "fmt"),
    [(0, 1, "png"), (2, 1, "png"), (1, 0, "png"), (-1, 3, "png"), (1, 1, "tiff"), (1, 1, "")],
)
def test_impossible_indexes_and_unknown_formats_get_no_name(
    index: int, count: int, fmt: str
) -> None:
    with pytest.raises(ValueError):
        output_path("/w/poster.prompt.toml", index, count, fmt)


@pytest.mark.parametrize(
    ("path", "n", "expected"),
    [
        ("/w/poster.png", 1, "/w/poster.v1.png"),
        ("/w/poster.png", 12, "/w/poster.v12.png"),
        ("/w/poster-2.jpg", 3, "/w/poster-2.v3.jpg"),
        ("/w/poster.v1.png", 1, "/w/poster.v1.v1.png"),
        ("/w/noext", 2, "/w/noext.v2"),
    ],
)
def test_version_n_of_a_name_goes_before_its_extension(path: str, n: int, expected: str) -> None:
    assert versioned_name(path, n) == Path(expected)


def test_versions_count_from_one() -> None:
    with pytest.raises(ValueError):
        versioned_name("/w/poster.png", 0)


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        (set(), "/w/poster.v1.png"),
        ({"/w/poster.v1.png"}, "/w/poster.v2.png"),
        ({"/w/poster.v1.png", "/w/poster.v2.png"}, "/w/poster.v3.png"),
        ({"/w/poster.v2.png"}, "/w/poster.v1.png"),
        ({"/w/poster.png", "/w/other.v1.png"}, "/w/poster.v1.png"),
    ],
)
def test_the_first_version_nobody_has_taken_is_chosen(taken: set[str], expected: str) -> None:
    assert versioned_path("/w/poster.png", lambda p: str(p) in taken) == Path(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/w/poster.prompt.toml", "/w/poster.error.txt"),
        ("/w/a.b.prompt.toml", "/w/a.b.error.txt"),
        ("/w/.prompt.toml", "/w/prompt.error.txt"),
        ("poster.prompt.toml", "poster.error.txt"),
    ],
)
def test_a_prompt_files_note_is_named_after_its_stem(source: str, expected: str) -> None:
    assert note_path(source) == Path(expected)


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        (".promptdrop-tmp-0123abcd", True),
        ("/w/sub/.promptdrop-tmp-x", True),
        ("promptdrop-tmp-x", False),
        ("poster.png", False),
        ("/w/.promptdrop-tmp-dir/poster.png", False),
    ],
)
def test_only_our_prefix_marks_a_temporary_file(name: str, ours: bool) -> None:
    assert is_own_temp(name) is ours


@pytest.mark.parametrize(
    ("stem", "tail"),
    [
        ("a" * 300, ".png"),
        ("ü" * 200, "-12.jpg"),
        ("🚀" * 70, ".error.txt"),
        ("x" * 251, ".png"),
    ],
)
def test_long_names_are_cut_to_fit_by_whole_characters(stem: str, tail: str) -> None:
    name = fit_name(stem, tail)
    assert len(os.fsencode(name)) <= NAME_MAX_BYTES
    assert name.endswith(tail)
    assert name == fit_name(stem, tail)  # deterministic
    name.encode("utf-8")  # no half character left behind
    assert fit_name(stem + "b", tail) != name  # different long stems stay apart


@pytest.mark.parametrize("stem", ["", "short", "a" * (NAME_MAX_BYTES - 4)])
def test_names_that_fit_are_left_alone(stem: str) -> None:
    assert fit_name(stem, ".png") == stem + ".png"


def test_a_tail_too_long_for_any_name_is_refused() -> None:
    with pytest.raises(ValueError):
        fit_name("poster", "." + "x" * NAME_MAX_BYTES)
