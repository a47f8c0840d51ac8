"""The model family end to end on the checking side: a table of prompt files across the six
models judged by `promptdrop check` (each with its expected message), the committed JSON Schema
agreeing with it on every file, folder defaults meeting a model, and the request hash."""

from __future__ import annotations

import io
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from promptdrop.commands.check import run_check
from promptdrop.spec import Request, SpecError, read_prompt_file

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "rules" / "prompt.schema.json").read_text()
)
URL = "https://example.com/r{}.png"


def refs(n: int) -> str:
    return "references = [" + ", ".join(f'"{URL.format(i)}"' for i in range(n)) + "]\n"


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    error: str | None  # None: valid; else a part of the message check prints


def row(id: str, text: str, error: str | None = None) -> Row:
    return Row(id, text, error)


PRO = 'model = "nano-banana-pro"\n'
G25O = 'model = "gemini-2.5-flash-image-official"\n'
G3PO = 'model = "gemini-3-pro-image-preview-official"\n'
G31 = 'model = "gemini-3.1-flash-image-preview"\n'
G31O = 'model = "gemini-3.1-flash-image-preview-official"\n'
NB = 'model = "nano-banana"\n'
P = 'prompt = "a lighthouse at dusk"\n'
SAFETY = (
    '[options]\nsafety_settings = [{{ category = "HARM_CATEGORY_HARASSMENT", threshold = "{}" }}]\n'
)
LONG = f'prompt = "{"x" * 3000}"\n'

ROWS = [
    row("default_minimal", P),
    row("default_1K_named", P + 'resolution = "1K"\n'),
    row("nb_21_9", P + NB + 'size = "21:9"\n', 'size "21:9" is not offered by gemini-2.5-flash'),
    row(
        "nb_21_9_names_pro",
        P + NB + 'size = "21:9"\n',
        "gemini-3-pro-image-preview (nano-banana-pro)",
    ),
    row("pro_21_9_4K", P + PRO + 'size = "21:9"\nresolution = "4K"\n'),
    row("nb_4K", P + NB + 'resolution = "4K"\n', "use a model that offers 4K: gemini-3-pro-image"),
    row("pro_3000_chars", LONG + PRO),
    row(
        "nb_3000_chars", LONG + NB, "prompt is 3000 characters long; gemini-2.5-flash-image-preview"
    ),
    row("default_3000_chars", LONG, "takes at most 1000"),
    row(
        "g25o_4_refs",
        P + G25O + refs(4),
        "references lists 4 images; gemini-2.5-flash-image-official",
    ),
    row("g25o_3_refs", P + G25O + refs(3)),
    row("g25o_1K", P + G25O + 'resolution = "1K"\n', "has no resolution setting"),
    row(
        "g25o_jpeg",
        P + G25O + '[options]\noutput_format = "image/jpeg"\ncompression_quality = 85\n',
    ),
    row(
        "g25o_quality_alone",
        P + G25O + "[options]\ncompression_quality = 85\n",
        'options.compression_quality needs options.output_format = "image/jpeg"',
    ),
    row(
        "g25o_quality_png",
        P + G25O + '[options]\noutput_format = "image/png"\ncompression_quality = 85\n',
        "options.compression_quality needs",
    ),
    row(
        "g25o_thinking",
        P + G25O + '[options]\nthinking_level = "HIGH"\n',
        "options.thinking_level is not taken by gemini-2.5-flash-image-official",
    ),
    row("g3po_thinking", P + G3PO + '[options]\nthinking_level = "HIGH"\nthinking_budget = 1024\n'),
    row(
        "g3po_orientation",
        P + G3PO + 'orientation = "landscape"\n',
        "orientation is not taken by gemini-3-pro-image-preview-official",
    ),
    row("pro_orientation", P + PRO + 'orientation = "landscape"\n'),
    row("g31_1_8_half_K", P + G31 + 'size = "1:8"\nresolution = "0.5K"\n'),
    row(
        "g31o_1_8",
        P + G31O + 'size = "1:8"\n',
        'size "1:8" is not offered by gemini-3.1-flash-image-preview-official',
    ),
    row(
        "g31o_half_K",
        P + G31O + 'resolution = "0.5K"\n',
        "use a model that offers 0.5K: gemini-3.1-flash-image-preview",
    ),
    row("g31o_8_1_2K", P + G31O + 'size = "8:1"\nresolution = "2K"\n'),
    row(
        "g31_image_search_alone",
        P + G31 + "[options]\ngoogle_image_search = true\n",
        "options.google_image_search needs options.google_search = true",
    ),
    row(
        "g31_both_searches",
        P + G31 + "[options]\ngoogle_search = true\ngoogle_image_search = true\n",
    ),
    row("g31_image_search_off", P + G31 + "[options]\ngoogle_image_search = false\n"),
    row(
        "g31_temperature",
        P + G31 + "[options]\ntemperature = 1.0\n",
        "options.temperature is not taken by gemini-3.1-flash-image-preview;",
    ),
    row(
        "nb_temperature",
        P + NB + "[options]\ntemperature = 1.0\n",
        "options.temperature is not taken by",
    ),
    row("default_temperature", P + "[options]\ntemperature = 1.0\n", "(nano-banana); remove it"),
    row(
        "g3po_hot",
        P + G3PO + "[options]\ntemperature = 2.5\n",
        "options.temperature must be a number from 0 to 2",
    ),
    row("g31o_top_p", P + G31O + "[options]\ntop_p = 0.9\nmax_output_tokens = 4096\n"),
    row(
        "g31o_safety",
        P + G31O + SAFETY.format("BLOCK_ONLY_HIGH"),
    ),
    row(
        "g31o_safety_bad",
        P + G31O + SAFETY.format("SOME"),
        "options.safety_settings entry 1: threshold must be one of OFF",
    ),
    row(
        "g25o_person",
        P + G25O + '[options]\nperson_generation = "ALLOW_SOME"\n',
        "options.person_generation 'ALLOW_SOME' is not one of ALLOW_ALL",
    ),
    row(
        "unknown_option", P + G25O + "[options]\ntempreature = 1.0\n", "did you mean 'temperature'?"
    ),
    row(
        "alias_2_official_4_1_4K",
        P + 'model = "nano-banana-2-official"\nsize = "4:1"\nresolution = "4K"\n',
    ),
    row("unknown_model", P + 'model = "nano-banana-3"\n', "model 'nano-banana-3' is not one of"),
    row(
        "pro_options",
        P + PRO + "[options]\nmax_output_tokens = 100\n",
        "options.max_output_tokens is not taken by gemini-3-pro-image-preview (nano-banana-pro)",
    ),
    row("pro_half_K", P + PRO + 'resolution = "0.5K"\n', "which offers 1K, 2K, 4K"),
    row(
        "resolution_8K",
        P + PRO + 'resolution = "8K"\n',
        "resolution '8K' is not one of 0.5K, 1K, 2K, 4K",
    ),
    row("g3po_15_refs", P + G3PO + refs(15), "references lists 15 images"),
    row("g31_14_refs", P + G31 + refs(14)),
    row("g31o_pro_alias_size", P + 'model = "nano-banana-pro-official"\nsize = "4:5"\n'),
]


def test_the_table_covers_every_model_with_thirty_files_or_more() -> None:
    assert len(ROWS) >= 30
    named = {line for r in ROWS for line in r.text.splitlines() if line.startswith("model")}
    for model in (PRO, G25O, G3PO, G31, G31O, NB):
        assert model.strip() in named


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_check_judges_each_file_and_the_schema_agrees(r: Row, tmp_path: Path) -> None:
    path = tmp_path / f"{r.id}.prompt.toml"
    path.write_text(r.text, encoding="utf-8")
    out = io.StringIO()
    rc = run_check([path], out)
    text = out.getvalue()
    if r.error is None:
        assert rc == 0, text
    else:
        assert rc == 1, text
        assert r.error in text
    schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(tomllib.loads(r.text))
    assert schema_ok == (rc == 0), f"the schema says {'valid' if schema_ok else 'invalid'}: {text}"


def _read(root: Path, name: str, text: str) -> object:
    path = root / name
    path.write_text(text, encoding="utf-8")
    try:
        return read_prompt_file(path, root)
    except SpecError as exc:
        return exc


def test_inherited_options_and_orientation_a_model_does_not_take_are_left_out(
    tmp_path: Path,
) -> None:
    (tmp_path / ".promptdrop.toml").write_text(
        'orientation = "portrait"\n[options]\ntemperature = 0.5\noutput_format = "image/webp"\n'
    )
    nb = read_prompt_file_ok(tmp_path, "a.prompt.toml", P)
    assert nb.metadata == {"orientation": "portrait"}  # nano-banana takes orientation only
    official = read_prompt_file_ok(tmp_path, "b.prompt.toml", P + G25O + "[options]\ntop_p = 0.5\n")
    assert official.metadata == {
        "temperature": 0.5,
        "topP": 0.5,
        "imageOutputOptions": {"mimeType": "image/webp"},
    }


def read_prompt_file_ok(root: Path, name: str, text: str) -> Request:
    got = _read(root, name, text)
    assert isinstance(got, Request), str(got)
    return got


def test_an_inherited_resolution_the_model_lacks_says_where_it_comes_from(tmp_path: Path) -> None:
    (tmp_path / ".promptdrop.toml").write_text('resolution = "4K"\n')
    got = _read(tmp_path, "a.prompt.toml", P)
    assert isinstance(got, SpecError)
    message = got.problems[0].message
    assert 'resolution "4K" is not offered by gemini-2.5-flash-image-preview' in message
    assert f"(the value comes from {tmp_path / '.promptdrop.toml'})" in message
    assert read_prompt_file_ok(tmp_path, "b.prompt.toml", P + PRO).metadata == {"resolution": "4K"}


def test_defaults_options_merge_key_by_key_under_the_prompt_files(tmp_path: Path) -> None:
    (tmp_path / ".promptdrop.toml").write_text("[options]\ntemperature = 0.5\ntop_p = 0.9\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / ".promptdrop.toml").write_text("[options]\ntop_p = 0.7\n")
    got = read_prompt_file_ok(sub, "a.prompt.toml", P + G31O + "[options]\ntemperature = 1.5\n")
    # `sub` is the watched folder here, so only its defaults apply: check the nesting too.
    assert got.options == {"temperature": 1.5, "top_p": 0.7}
    nested = read_prompt_file(sub / "a.prompt.toml", tmp_path)
    assert nested.options == {"temperature": 1.5, "top_p": 0.7}
    (sub / "b.prompt.toml").write_text(P + G31O)
    assert read_prompt_file(sub / "b.prompt.toml", tmp_path).options == {
        "temperature": 0.5,
        "top_p": 0.7,
    }


# Hashes of default-model requests computed by the release before the model family (92ff945):
# a ledger written then must find its jobs again, so nothing is paid twice after an upgrade.
GOLDEN = {
    'prompt = "a red fox in the snow"\n': (
        "f1b92201643d9706d5aa281626c8d4e47613db4bb2b449c08b7a4389a0df2c12"
    ),
    'prompt = "a red fox in the snow"\nmodel = "nano-banana"\nsize = "16:9"\n': (
        "0bb207469eb270891fb4cc62b6c6d2fb77dcc14a82b4175b27d7441751e8b2b7"
    ),
    'prompt = "an owl"\nsize = "2:3"\norientation = "portrait"\ncount = 3\n': (
        "53defaa3800663bb95a5fb4bd7f81adb9e8e92f7e271525892ae1346bd292af5"
    ),
    'prompt = "same style"\nreferences = ["https://example.com/a.png", '
    '"http://example.com/b.jpg"]\n': (
        "81f9776a00414f51b9fffc757207a0ec601991c926f9345e1a3ba6f676326f5f"
    ),
}


@pytest.mark.parametrize("text", list(GOLDEN))
def test_default_model_requests_hash_as_before_the_family(text: str, tmp_path: Path) -> None:
    got = read_prompt_file_ok(tmp_path, "a.prompt.toml", text)
    assert got.request_hash == GOLDEN[text]
    assert got.resolution is None and got.options == {}


def test_what_the_hash_covers(tmp_path: Path) -> None:
    def h(text: str) -> str:
        return read_prompt_file_ok(tmp_path, "x.prompt.toml", P + text).request_hash

    pro = h(PRO)
    assert pro == h('model = "gemini-3-pro-image-preview"\n')  # alias and id: one model
    assert pro == h(PRO + 'resolution = "1K"\n')  # the default resolution is no resolution
    assert pro != h(PRO + 'resolution = "2K"\n') != h(PRO + 'resolution = "4K"\n')
    assert pro != h('model = "nano-banana-pro-official"\n')
    base = h(G31O)
    assert base != h(G31O + "[options]\ntemperature = 1.0\n")
    assert h(G31O + "[options]\ntemperature = 1.0\n") != h(G31O + "[options]\ntemperature = 1.5\n")
    assert h(G31O + "[options]\ntemperature = 1\n") == h(G31O + "[options]\ntemperature = 1.0\n")


def test_a_file_with_a_malformed_value_still_hears_what_its_model_refuses(tmp_path: Path) -> None:
    text = P + G25O + '[options]\ntemperature = "hot"\nthinking_level = "HIGH"\n'
    got = _read(tmp_path, "a.prompt.toml", text)
    assert isinstance(got, SpecError)
    assert [(p.line, p.message.split(";")[0]) for p in got.problems] == [
        (4, "options.temperature must be a number from 0 to 2"),
        (
            5,
            "options.thinking_level is not taken by gemini-2.5-flash-image-official "
            "(nano-banana-official)",
        ),
    ]


def test_an_unknown_model_is_not_judged_by_the_default_models_limits(tmp_path: Path) -> None:
    got = _read(tmp_path, "a.prompt.toml", P + 'model = "nano-banana-3"\nsize = "21:9"\n')
    assert isinstance(got, SpecError)
    assert [p.message.split(" is not")[0] for p in got.problems] == ["model 'nano-banana-3'"]
