"""Property tests: reading never fails in an unexpected way, and the hash ignores formatting."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptdrop.capabilities import MODELS as CAPABILITY_ROWS
from promptdrop.capabilities import ModelRow, row_of
from promptdrop.spec import Request, SpecError, read_defaults, read_prompt_file

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Bytes that are mostly TOML-ish, so the parser gets past the first character often.
toml_like = st.lists(
    st.sampled_from(
        [
            b"prompt",
            b"size",
            b"count",
            b"model",
            b"references",
            b"orientation",
            b" = ",
            b'"',
            b"'",
            b"[",
            b"]",
            b"{",
            b"}",
            b",",
            b"\n",
            b"1",
            b"16:9",
            b"nano-banana",
            b"#",
            b"\xef\xbb\xbf",
            b"\x00",
            b"\xc3",
            b"\xff",
            b".",
            b"true",
            b"2.5",
            b"..",
            b"/",
            b"a.png",
            b"https://x.y/z.png",
            b"\\u0000",
        ]
    ),
    max_size=40,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=300), toml_like)


@SETTINGS
@given(data=any_bytes)
def test_any_bytes_give_a_request_or_a_spec_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "x.prompt.toml"
        path.write_bytes(data)
        try:
            result = read_prompt_file(path, root)
        except SpecError as exc:
            assert exc.problems, "a SpecError must say what is wrong"
            assert all(p.message for p in exc.problems)
        else:
            assert isinstance(result, Request)
            json.dumps(result.canonical())
        defaults = root / ".promptdrop.toml"
        defaults.write_bytes(data)
        try:
            read_defaults(defaults)
        except SpecError as exc:
            assert exc.problems


prompt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=200,
).filter(lambda s: s.strip() == s and s != "")


def _valid_for(row: ModelRow, named: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Valid prompt files for one model: only what its row takes."""
    optional: dict[str, st.SearchStrategy[Any]] = {
        "size": st.sampled_from(row.sizes),
        "count": st.integers(1, 10),
        "references": st.lists(
            st.sampled_from(["https://a.example/x.png", "http://b.example/y.jpg"]),
            max_size=row.max_references,
        ),
    }
    if row.orientation:
        optional["orientation"] = st.sampled_from(["landscape", "portrait"])
    if row.resolutions:
        optional["resolution"] = st.sampled_from(row.resolutions)
    required: dict[str, st.SearchStrategy[Any]] = {"prompt": prompt_text}
    if named:
        required["model"] = st.sampled_from(row.names)
    return st.fixed_dictionaries(required, optional=optional)


# Any model of the table, named by id or alias, or the default model left unnamed.
valid_prompt = st.one_of(
    _valid_for(row_of(None), named=False),
    st.sampled_from(CAPABILITY_ROWS).flatmap(lambda row: _valid_for(row, named=True)),
)


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # valid TOML basic string (no surrogates)


def _render(values: dict[str, Any], order: list[str], blank_lines: int, comment: bool) -> str:
    lines = []
    if comment:
        lines.append("# written by a test")
    for key in order:
        lines.append(f"{key} = {_toml_value(values[key])}" + ("  # note" if comment else ""))
        lines.extend([""] * blank_lines)
    return "\n".join(lines) + "\n"


@SETTINGS
@given(values=valid_prompt, data=st.data())
def test_valid_prompts_in_any_key_order_and_layout_hash_equal(
    values: dict[str, Any], data: st.DataObject
) -> None:
    keys = list(values)
    order_a = data.draw(st.permutations(keys))
    order_b = data.draw(st.permutations(keys))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        a = root / "a.prompt.toml"
        b = root / "b.prompt.toml"
        a.write_text(_render(values, order_a, 0, False), encoding="utf-8")
        b.write_text(_render(values, order_b, data.draw(st.integers(0, 2)), True), encoding="utf-8")
        ra = read_prompt_file(a, root)
        rb = read_prompt_file(b, root)
    assert ra.request_hash == rb.request_hash
    assert ra.prompt == values["prompt"]
    assert ra.count == values.get("count", 1)
