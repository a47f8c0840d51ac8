"""Prompt files and folder defaults: a table of valid and invalid files, plus request hashing.

Each case writes real files under a watched root in tmp_path and reads the prompt file with
`read_prompt_file`, as the daemon does.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from promptdrop.spec import (
    CANONICAL_MODEL,
    FolderDefaults,
    Request,
    SpecError,
    read_defaults,
    read_prompt_file,
    read_rules,
    rules_for_folders,
)

TARGET = "p.prompt.toml"


@cache
def image_bytes(fmt: str, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buf, format=fmt)
    return buf.getvalue()


PNG = image_bytes("PNG")


def refs_toml(refs: list[str]) -> str:
    return "references = [" + ", ".join(f'"{r}"' for r in refs) + "]\n"


Setup = Callable[[Path, Path], None]  # (tmp_path, root)


@dataclass
class Case:
    files: dict[str, str | bytes]
    target: str = TARGET
    error: str | None = None  # expected substring of one problem's message
    line: int | None = None
    col: int | None = None
    not_ready: bool = False
    values: dict[str, Any] = field(default_factory=dict)  # expected Request attributes
    setup: Setup | None = None


def case(id: str, files: dict[str, str | bytes], **kw: Any) -> Any:
    return pytest.param(Case(files, **kw), id=id)


def _symlink_out(tmp: Path, root: Path) -> None:
    (tmp / "outside.png").write_bytes(PNG)
    (root / "link.png").symlink_to(tmp / "outside.png")


def _symlink_in(tmp: Path, root: Path) -> None:
    (root / "real.png").write_bytes(PNG)
    (root / "link.png").symlink_to(root / "real.png")


def _prompt_link_out(tmp: Path, root: Path) -> None:
    (tmp / "elsewhere.prompt.toml").write_text('prompt = "stolen"\n')
    (root / TARGET).symlink_to(tmp / "elsewhere.prompt.toml")


def _fifo(tmp: Path, root: Path) -> None:
    os.mkfifo(root / TARGET)


def _dir_target(tmp: Path, root: Path) -> None:
    (root / TARGET).mkdir()


def _big_reference(tmp: Path, root: Path) -> None:
    with open(root / "huge.png", "wb") as f:
        f.write(PNG)
        f.truncate(11 * 1024 * 1024)  # sparse: fast to make, really 11 MB long


def _ref_dir(tmp: Path, root: Path) -> None:
    (root / "folder.png").mkdir()


def _ref_fifo(tmp: Path, root: Path) -> None:
    os.mkfifo(root / "pipe.png")


MANY = [f"r{i}.png" for i in range(15)]

CASES = [
    # --- valid files -------------------------------------------------------------------
    case(
        "minimal",
        {TARGET: 'prompt = "a red fox"\n'},
        values={
            "prompt": "a red fox",
            "size": "1:1",
            "model": CANONICAL_MODEL,
            "count": 1,
            "orientation": None,
            "references": (),
        },
    ),
    case(
        "every_key",
        {
            TARGET: 'prompt = "fox"\nsize = "16:9"\nmodel = "nano-banana"\n'
            'count = 10\norientation = "portrait"\n'
        },
        values={"size": "16:9", "model": CANONICAL_MODEL, "count": 10, "orientation": "portrait"},
    ),
    case("bom_accepted", {TARGET: b'\xef\xbb\xbfprompt = "fox"\n'}, values={"prompt": "fox"}),
    case("crlf_line_endings", {TARGET: b'prompt = "fox"\r\ncount = 2\r\n'}, values={"count": 2}),
    case("1000_characters", {TARGET: f'prompt = "{"a" * 1000}"\n'}, values={"prompt": "a" * 1000}),
    case(
        "1000_non_ascii_characters_count_as_characters",
        {TARGET: f'prompt = "{"é" * 1000}"\n'},
        values={"prompt": "é" * 1000},
    ),
    case(
        "style_exactly_to_1000",
        {TARGET: f'prompt = "{"a" * 990}"\n', ".promptdrop.toml": 'style = "bbbbbbbb"\n'},
        values={"prompt": "a" * 990 + "\n\n" + "b" * 8},
    ),
    case(
        "multiline_prompt_outer_whitespace_dropped",
        {TARGET: 'prompt = """\n  a fox\n  in snow\n"""\n'},
        values={"prompt": "a fox\n  in snow"},
    ),
    case(
        "dotdot_staying_inside_root",
        {"sub/" + TARGET: refs_toml(["../img.png"]) + 'prompt = "x"\n', "img.png": PNG},
        target="sub/" + TARGET,
        values={"count": 1},
    ),
    case(
        "remote_https_reference",
        {TARGET: 'prompt = "x"\n' + refs_toml(["https://example.com/a.jpg"])},
        values={"references": ("url:https://example.com/a.jpg",)},
    ),
    case(
        "jpeg_and_webp_references",
        {
            TARGET: 'prompt = "x"\n' + refs_toml(["a.jpg", "b.webp"]),
            "a.jpg": image_bytes("JPEG"),
            "b.webp": image_bytes("WEBP"),
        },
        values={"formats": ("jpeg", "webp")},
    ),
    case(
        "14_references",
        {TARGET: 'prompt = "x"\n' + refs_toml(["r.png"] * 14), "r.png": PNG},
        values={"n_references": 14},
    ),
    case(
        "symlink_reference_inside_root",
        {TARGET: 'prompt = "x"\n' + refs_toml(["link.png"])},
        setup=_symlink_in,
        values={"n_references": 1},
    ),
    case(
        "defaults_inherited_key_by_key_nearest_wins",
        {
            ".promptdrop.toml": 'size = "16:9"\ncount = 3\nstyle = "top style"\n',
            "sub/.promptdrop.toml": 'count = 2\norientation = "landscape"\n',
            "sub/" + TARGET: 'prompt = "fox"\n',
        },
        target="sub/" + TARGET,
        values={
            "size": "16:9",
            "count": 2,
            "orientation": "landscape",
            "prompt": "fox\n\ntop style",
        },
    ),
    case(
        "prompt_file_wins_over_defaults",
        {
            ".promptdrop.toml": 'size = "16:9"\ncount = 3\nmodel = "nano-banana"\n',
            TARGET: 'prompt = "fox"\nsize = "2:3"\ncount = 1\n',
        },
        values={"size": "2:3", "count": 1},
    ),
    case(
        "empty_style_switches_off_inherited_style",
        {
            ".promptdrop.toml": 'style = "top"\n',
            "sub/.promptdrop.toml": 'style = ""\n',
            "sub/" + TARGET: 'prompt = "fox"\n',
        },
        target="sub/" + TARGET,
        values={"prompt": "fox"},
    ),
    case(
        "defaults_references_relative_to_defaults_folder",
        {
            ".promptdrop.toml": refs_toml(["refs/a.png"]),
            "refs/a.png": PNG,
            "sub/" + TARGET: 'prompt = "fox"\n',
        },
        target="sub/" + TARGET,
        values={"ref_names": ("a.png",)},
    ),
    case(
        "prompt_references_replace_defaults_references",
        {
            ".promptdrop.toml": refs_toml(["a.png"]),
            "a.png": PNG,
            "b.png": image_bytes("JPEG"),
            TARGET: 'prompt = "fox"\n' + refs_toml(["b.png"]),
        },
        values={"ref_names": ("b.png",)},
    ),
    # --- invalid before parsing --------------------------------------------------------
    case(
        "invalid_toml_names_line_and_column",
        {TARGET: 'prompt = "fox"\nsize = 16:9\n'},
        error="not valid TOML",
        line=2,
        col=10,
        not_ready=True,
    ),
    case(
        "unterminated_string_may_be_half_written",
        {TARGET: 'prompt = "a fox in th'},
        error="not valid TOML",
        line=1,
        not_ready=True,
    ),
    case(
        "invalid_utf8_in_the_middle",
        {TARGET: b'prompt = "caf\xff"\ncount = 1\n'},
        error="not UTF-8",
        line=1,
        col=14,
    ),
    case(
        "utf8_cut_off_at_the_end_may_be_half_written",
        {TARGET: b'prompt = "caf\xc3'},
        error="not UTF-8",
        not_ready=True,
    ),
    case("nul_bytes", {TARGET: b'prompt = "fox"\x00\n'}, error="NUL bytes"),
    case("empty_file_may_be_half_written", {TARGET: b""}, error="empty", not_ready=True),
    case("only_a_bom_is_empty", {TARGET: b"\xef\xbb\xbf"}, error="empty", not_ready=True),
    case(
        "65_kib_file",
        {TARGET: 'prompt = "fox"\n' + "#" * (65 * 1024) + "\n"},
        error="at most 64.0 KiB",
    ),
    case(
        "deeply_nested_arrays",
        {TARGET: "x = " + "[" * 3000 + "]" * 3000 + "\n"},
        error="nested too deeply",
    ),
    case(
        "deeply_nested_tables",
        {TARGET: 'prompt = "x"\n[' + ".".join(["a"] * 500) + "]\n"},
        error="unknown key 'a'",
        line=2,
    ),
    case("fifo_refused_without_blocking", {}, setup=_fifo, error="named pipe"),
    case("folder_named_like_a_prompt_file", {}, setup=_dir_target, error="a folder"),
    case(
        "prompt_file_symlink_leading_outside",
        {},
        setup=_prompt_link_out,
        error="link that leads outside",
    ),
    # --- prompt text ---------------------------------------------------------------------
    case(
        "1001_characters",
        {TARGET: f'prompt = "{"a" * 1001}"\n'},
        error="1001 characters long",
        line=1,
        col=1,
    ),
    case(
        "style_pushes_990_over_the_limit",
        {TARGET: f'prompt = "{"a" * 990}"\n', ".promptdrop.toml": 'style = "bbbbbbbbb"\n'},
        error="with the folder style is 1001 characters",
    ),
    case("prompt_missing", {TARGET: 'size = "1:1"\n'}, error="prompt is missing"),
    case("prompt_blank", {TARGET: 'prompt = "   "\n'}, error="prompt is empty"),
    case("prompt_empty_string", {TARGET: 'prompt = ""\n'}, error="prompt is empty"),
    case("prompt_not_text", {TARGET: "prompt = 42\n"}, error="prompt must be text in quotes"),
    case(
        "prompt_control_character", {TARGET: 'prompt = "fox\\u0007"\n'}, error="control characters"
    ),
    # --- values --------------------------------------------------------------------------
    case(
        "count_quoted",
        {TARGET: 'prompt = "x"\ncount = "2"\n'},
        error="write count = 2 without quotes",
        line=2,
        col=1,
    ),
    case(
        "count_fraction",
        {TARGET: 'prompt = "x"\ncount = 2.5\n'},
        error="count must be a whole number from 1 to 10; it is 2.5",
    ),
    case("count_boolean", {TARGET: 'prompt = "x"\ncount = true\n'}, error="it is true"),
    case("count_zero", {TARGET: 'prompt = "x"\ncount = 0\n'}, error="from 1 to 10; it is 0"),
    case("count_eleven", {TARGET: 'prompt = "x"\ncount = 11\n'}, error="from 1 to 10; it is 11"),
    case(
        "unknown_size",
        {TARGET: 'prompt = "x"\n\nsize = "7:3"\n'},
        error="size '7:3' is not one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 4:5, 5:4, 21:9, 1:4, "
        "4:1, 1:8, 8:1",
        line=3,
        col=1,
    ),
    case("size_not_text", {TARGET: 'prompt = "x"\nsize = 1\n'}, error="size must be one of 1:1"),
    case(
        "unknown_model",
        {TARGET: 'prompt = "x"\nmodel = "dall-e-3"\n'},
        error="model 'dall-e-3' is not one of gemini-2.5-flash-image-preview, nano-banana",
    ),
    case(
        "wrong_orientation",
        {TARGET: 'prompt = "x"\norientation = "sideways"\n'},
        error="orientation 'sideways' is not one of landscape, portrait",
    ),
    case(
        "unknown_key_with_suggestion",
        {TARGET: 'promt = "x"\n'},
        error="unknown key 'promt': did you mean 'prompt'?",
        line=1,
        col=1,
    ),
    case(
        "unknown_key_without_suggestion",
        {TARGET: 'prompt = "x"\nseed = 4\n'},
        error="unknown key 'seed'; the keys allowed here are",
        line=2,
    ),
    case(
        "style_belongs_in_defaults",
        {TARGET: 'prompt = "x"\nstyle = "y"\n'},
        error="'style' belongs in the folder's .promptdrop.toml",
    ),
    case(
        "unknown_key_in_defaults",
        {".promptdrop.toml": 'sise = "1:1"\n', TARGET: 'prompt = "x"\n'},
        error="unknown key 'sise': did you mean 'size'?",
        line=1,
    ),
    case(
        "prompt_in_defaults",
        {".promptdrop.toml": 'prompt = "x"\n', TARGET: 'prompt = "x"\n'},
        error="'prompt' does not belong in .promptdrop.toml",
    ),
    case(
        "bad_value_in_defaults",
        {".promptdrop.toml": "count = 20\n", TARGET: 'prompt = "x"\n'},
        error="count must be a whole number from 1 to 10; it is 20",
    ),
    case(
        "half_written_defaults",
        {".promptdrop.toml": 'size = "16', TARGET: 'prompt = "x"\n'},
        error="not valid TOML",
        not_ready=True,
    ),
    # --- references ----------------------------------------------------------------------
    case(
        "15_references",
        {TARGET: 'prompt = "x"\n' + refs_toml(MANY)},
        error="references lists 15 images; the API takes at most 14",
    ),
    case(
        "references_not_a_list",
        {TARGET: 'prompt = "x"\nreferences = "a.png"\n'},
        error="references must be a list",
    ),
    case(
        "reference_not_text",
        {TARGET: 'prompt = "x"\nreferences = [3]\n'},
        error="references entry 1 must be a file name",
    ),
    case(
        "dotdot_escaping_root",
        {"sub/" + TARGET: 'prompt = "x"\n' + refs_toml(["../../secret.png"])},
        target="sub/" + TARGET,
        error="points outside the watched folder",
    ),
    case(
        "absolute_path",
        {TARGET: 'prompt = "x"\n' + refs_toml(["/etc/passwd"])},
        error="is an absolute path",
    ),
    case(
        "home_path",
        {TARGET: 'prompt = "x"\n' + refs_toml(["~/a.png"])},
        error="is an absolute path",
    ),
    case(
        "data_uri",
        {TARGET: 'prompt = "x"\n' + refs_toml(["data:image/png;base64,AAAA"])},
        error="data: URIs",
    ),
    case(
        "ftp_url",
        {TARGET: 'prompt = "x"\n' + refs_toml(["ftp://example.com/a.png"])},
        error="uses ftp:",
    ),
    case(
        "url_without_host",
        {TARGET: 'prompt = "x"\n' + refs_toml(["https:///a.png"])},
        error="needs a host name",
    ),
    case(
        "symlink_reference_leading_outside",
        {TARGET: 'prompt = "x"\n' + refs_toml(["link.png"])},
        setup=_symlink_out,
        error="link that leads outside",
    ),
    case(
        "missing_reference",
        {TARGET: 'prompt = "x"\n' + refs_toml(["nope.png"])},
        error="reference 'nope.png' was not found",
        line=2,
        col=1,
    ),
    case(
        "folder_as_reference",
        {TARGET: 'prompt = "x"\n' + refs_toml(["folder.png"])},
        setup=_ref_dir,
        error="is a folder, not an image file",
    ),
    case(
        "fifo_as_reference_refused_without_blocking",
        {TARGET: 'prompt = "x"\n' + refs_toml(["pipe.png"])},
        setup=_ref_fifo,
        error="is a named pipe, not an image file",
    ),
    case(
        "text_file_named_png",
        {TARGET: 'prompt = "x"\n' + refs_toml(["fake.png"]), "fake.png": "I am text\n"},
        error="is not a JPEG, PNG or WebP image",
    ),
    case(
        "damaged_png",
        {TARGET: 'prompt = "x"\n' + refs_toml(["cut.png"]), "cut.png": PNG[: len(PNG) // 2]},
        error="does not open",
    ),
    case(
        "gif_reference",
        {TARGET: 'prompt = "x"\n' + refs_toml(["a.gif"]), "a.gif": image_bytes("GIF")},
        error="GIF image; the API takes only JPEG, PNG and WebP",
    ),
    case(
        "11_mb_reference",
        {TARGET: 'prompt = "x"\n' + refs_toml(["huge.png"])},
        setup=_big_reference,
        error="the API takes images up to 10 MB",
    ),
]


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8", newline="")


def _read_in_thread(path: Path, root: Path) -> Request | SpecError:
    """Run read_prompt_file with a time bound, so a file that blocks fails the test."""
    result: list[Request | SpecError] = []

    def run() -> None:
        try:
            result.append(read_prompt_file(path, root))
        except SpecError as exc:
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert result, "read_prompt_file blocked"
    return result[0]


@pytest.mark.parametrize("c", CASES)
def test_prompt_file_table(c: Case, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _write(root, c.files)
    if c.setup:
        c.setup(tmp_path, root)
    got = _read_in_thread(root / c.target, root)
    if c.error is not None:
        assert isinstance(got, SpecError), f"expected an error, got {got}"
        matching = [p for p in got.problems if c.error in p.message]
        assert matching, f"{c.error!r} not in:\n{got}"
        if c.line is not None:
            assert matching[0].line == c.line, str(got)
        if c.col is not None:
            assert matching[0].col == c.col, str(got)
        assert got.not_ready is c.not_ready
        return
    assert isinstance(got, Request), str(got)
    for key, want in c.values.items():
        if key == "references":
            assert tuple(r.key for r in got.references) == want
        elif key == "n_references":
            assert len(got.references) == want
        elif key == "formats":
            assert tuple(r.format for r in got.references) == want
        elif key == "ref_names":
            assert tuple(r.path.name for r in got.references if r.path) == want
        else:
            assert getattr(got, key) == want, key


def test_table_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_all_problems_of_a_file_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / TARGET).write_text(
        'promt = "x"\nsize = "7:3"\ncount = 0\n' + refs_toml(["/abs.png", "missing.png"])
    )
    with pytest.raises(SpecError) as info:
        read_prompt_file(tmp_path / TARGET, tmp_path)
    text = str(info.value)
    for part in (
        "unknown key 'promt'",
        "prompt is missing",
        "size '7:3'",
        "count must",
        "absolute path",
        "'missing.png' was not found",
    ):
        assert part in text
    assert info.value.not_ready is False
    assert any(
        line.startswith(f"{tmp_path / TARGET}:2:1: size '7:3'") for line in text.splitlines()
    )


def test_problem_str_omits_missing_parts() -> None:
    from promptdrop.spec import Problem

    assert str(Problem(Path("a.toml"), "bad", 3, 7)) == "a.toml:3:7: bad"
    assert str(Problem(Path("a.toml"), "bad", 3)) == "a.toml:3: bad"
    assert str(Problem(Path("a.toml"), "bad")) == "a.toml: bad"


def test_references_resolve_to_hashed_local_files(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / TARGET).write_text('prompt = "x"\n' + refs_toml(["a.png"]))
    ref = read_prompt_file(tmp_path / TARGET, tmp_path).references[0]
    import hashlib

    assert ref.kind == "file" and ref.format == "png" and ref.size == len(PNG)
    assert ref.key == "sha256:" + hashlib.sha256(PNG).hexdigest()
    assert ref.path == (tmp_path / "a.png").resolve()


def test_rule_defaults_are_the_weakest_layer(tmp_path: Path) -> None:
    (tmp_path / ".promptdrop.toml").write_text("count = 2\n")
    (tmp_path / TARGET).write_text('prompt = "x"\n')
    rule = FolderDefaults(size="4:3", count=5, style="house")
    req = read_prompt_file(tmp_path / TARGET, tmp_path, rule_defaults=rule)
    assert (req.size, req.count, req.prompt) == ("4:3", 2, "x\n\nhouse")


def test_a_missing_rule_defaults_reference_says_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / TARGET).write_text('prompt = "x"\n')
    rule = FolderDefaults(references=["brand/logo.png"])
    with pytest.raises(SpecError, match=r"\[rules.defaults\]: reference 'brand/logo.png' was"):
        read_prompt_file(tmp_path / TARGET, tmp_path, rule_defaults=rule)


def test_read_defaults_returns_the_values(tmp_path: Path) -> None:
    (tmp_path / ".promptdrop.toml").write_text('size = "9:16"\nstyle = "s"\n')
    d = read_defaults(tmp_path / ".promptdrop.toml")
    assert d == FolderDefaults(size="9:16", style="s")


def test_a_file_outside_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / TARGET).write_text('prompt = "x"\n')
    with pytest.raises(SpecError, match="not inside the watched folder"):
        read_prompt_file(tmp_path / TARGET, tmp_path / "root")


# --------------------------------------------------------------------------- hashing


def _request(tmp_path: Path, text: str, name: str = TARGET, **files: str | bytes) -> Request:
    folder = tmp_path / name.replace(".", "_")
    folder.mkdir(exist_ok=True)
    _write(folder, {name: text, **files})
    return read_prompt_file(folder / name, folder)


def test_key_order_whitespace_and_comments_do_not_change_the_hash(tmp_path: Path) -> None:
    a = _request(
        tmp_path, 'prompt = "fox"\nsize = "16:9"\norientation = "portrait"\n', "a.prompt.toml"
    )
    b = _request(
        tmp_path,
        '# a comment\norientation="portrait"   # hint\n\n\nsize   =  "16:9"\nprompt = \'fox\'\n',
        "b.prompt.toml",
    )
    assert a.request_hash == b.request_hash


def test_nano_banana_and_the_canonical_model_hash_equal(tmp_path: Path) -> None:
    a = _request(tmp_path, 'prompt = "fox"\nmodel = "nano-banana"\n', "a.prompt.toml")
    b = _request(tmp_path, f'prompt = "fox"\nmodel = "{CANONICAL_MODEL}"\n', "b.prompt.toml")
    c = _request(tmp_path, 'prompt = "fox"\n', "c.prompt.toml")
    assert a.model == CANONICAL_MODEL
    assert a.request_hash == b.request_hash == c.request_hash


def test_a_value_from_defaults_hashes_like_the_same_value_written_out(tmp_path: Path) -> None:
    a = _request(
        tmp_path,
        'prompt = "fox"\n',
        "a.prompt.toml",
        **{".promptdrop.toml": 'size = "3:2"\norientation = "landscape"\n'},
    )
    b = _request(
        tmp_path, 'prompt = "fox"\nsize = "3:2"\norientation = "landscape"\n', "b.prompt.toml"
    )
    assert a.request_hash == b.request_hash


def test_changing_a_reference_images_bytes_changes_the_hash(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / TARGET).write_text('prompt = "fox"\n' + refs_toml(["a.png"]))
    before = read_prompt_file(tmp_path / TARGET, tmp_path).request_hash
    (tmp_path / "a.png").write_bytes(image_bytes("PNG", 17))
    after = read_prompt_file(tmp_path / TARGET, tmp_path).request_hash
    assert before != after


def test_a_renamed_reference_with_the_same_bytes_hashes_equal(tmp_path: Path) -> None:
    a = _request(
        tmp_path, 'prompt = "fox"\n' + refs_toml(["one.png"]), "a.prompt.toml", **{"one.png": PNG}
    )
    b = _request(
        tmp_path, 'prompt = "fox"\n' + refs_toml(["two.png"]), "b.prompt.toml", **{"two.png": PNG}
    )
    assert a.request_hash == b.request_hash


def test_count_does_not_change_the_hash_but_other_values_do(tmp_path: Path) -> None:
    base = _request(tmp_path, 'prompt = "fox"\n', "a.prompt.toml")
    more = _request(tmp_path, 'prompt = "fox"\ncount = 4\n', "b.prompt.toml")
    assert base.request_hash == more.request_hash
    assert more.canonical()["count"] == 4
    for n, text in enumerate(
        [
            'prompt = "fox!"\n',
            'prompt = "fox"\nsize = "2:3"\n',
            'prompt = "fox"\norientation = "portrait"\n',
            'prompt = "fox"\n' + refs_toml(["https://e.com/a.png"]),
        ]
    ):
        other = _request(tmp_path, text, f"o{n}.prompt.toml")
        assert other.request_hash != base.request_hash, text


def test_reference_order_is_part_of_the_hash(tmp_path: Path) -> None:
    files = {"a.png": PNG, "b.png": image_bytes("PNG", 20)}
    x = _request(
        tmp_path, 'prompt = "f"\n' + refs_toml(["a.png", "b.png"]), "x.prompt.toml", **files
    )
    y = _request(
        tmp_path, 'prompt = "f"\n' + refs_toml(["b.png", "a.png"]), "y.prompt.toml", **files
    )
    assert x.request_hash != y.request_hash


def test_canonical_form_is_json_serialisable(tmp_path: Path) -> None:
    import json

    req = _request(
        tmp_path,
        'prompt = "fox"\norientation = "landscape"\n' + refs_toml(["a.png", "https://e.com/x.jpg"]),
        TARGET,
        **{"a.png": PNG},
    )
    data = json.loads(json.dumps(req.canonical()))
    assert data["metadata"] == {"orientation": "landscape"} == req.metadata
    assert [r["kind"] for r in data["references"]] == ["file", "url"]


# --------------------------------------------------------------------------- rules files

RULES_CASES = [
    pytest.param('[[rules]]\nname = "a"\npath = "drop"\n', None, id="minimal"),
    pytest.param(
        '[api]\naccount_group = "gold"\n[[rules]]\nname = "a"\npath = "d"\n',
        "account_group 'gold' is not one of default, vip, svip",
        id="bad_group",
    ),
    pytest.param(
        '[api]\nbase_url = "toapis.com"\n[[rules]]\nname = "a"\npath = "d"\n',
        "base_url must be a web address",
        id="base_url_without_scheme",
    ),
    pytest.param(
        '[api]\npoll_first = 0\n[[rules]]\nname = "a"\npath = "d"\n',
        "poll_first must be a number of seconds greater than 0 and at most 600",
        id="zero_poll_first",
    ),
    pytest.param(
        '[api]\npoll_interval = 601\n[[rules]]\nname = "a"\npath = "d"\n',
        "poll_interval must be a number of seconds greater than 0 (at most 600 under [api])",
        id="api_poll_interval_too_long",
    ),
    pytest.param(
        '[api]\nsubmit_rate = 0\n[[rules]]\nname = "a"\npath = "d"\n',
        "submit_rate must be a number of requests per second from 0.1 to 1000",
        id="zero_submit_rate",
    ),
    pytest.param(
        '[api]\nsubmit_rate = 5000\n[[rules]]\nname = "a"\npath = "d"\n',
        "submit_rate must be a number of requests per second from 0.1 to 1000",
        id="submit_rate_too_high",
    ),
    pytest.param(
        '[api]\nsubmit_rate = "50"\n[[rules]]\nname = "a"\npath = "d"\n',
        "submit_rate must be a number of requests per second",
        id="quoted_submit_rate",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\nsetle = 2\n',
        "unknown key 'setle': did you mean 'settle'?",
        id="unknown_rule_key",
    ),
    pytest.param(
        'apii = 1\n[[rules]]\nname = "a"\npath = "d"\n',
        "unknown key 'apii': did you mean 'api'?",
        id="unknown_top_key",
    ),
    pytest.param("# nothing yet\n", "there are no rules", id="no_rules_in_a_comment_only_file"),
    pytest.param("[api]\n", "there are no rules", id="no_rules"),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\n[[rules]]\nname = "a"\npath = "e"\n',
        "rule name 'a' is used twice",
        id="duplicate_names",
    ),
    pytest.param('[[rules]]\npath = "d"\n', "name is missing", id="name_missing"),
    pytest.param('[[rules]]\nname = "a"\n', "path is missing", id="path_missing"),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\nsettle = -1\n',
        "settle must be a number of seconds, 0 or more",
        id="negative_settle",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\npoll_interval = 0\n',
        "poll_interval must be a number of seconds greater than 0",
        id="zero_poll",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\nmax_in_flight = 513\n',
        "max_in_flight must be a whole number from 1 to 512",
        id="max_in_flight_513",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\ndaily_budget = 0\n',
        "daily_budget must be a whole number, 1 or more",
        id="zero_budget",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\nreconcile_interval = 5\n',
        "reconcile_interval must be a number of seconds, 10 or more",
        id="reconcile_5",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\npoll = "sometimes"\n',
        "poll 'sometimes' is not one of auto, always, never",
        id="bad_poll",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\n[rules.defaults]\nsise = "1:1"\n',
        "[rules.defaults] unknown key 'sise': did you mean 'size'?",
        id="unknown_key_in_rule_defaults",
    ),
    pytest.param(
        '[[rules]]\nname = "a"\npath = "d"\n[rules.defaults]\nreferences = ["/x.png"]\n',
        "is an absolute path",
        id="rule_defaults_abs_ref",
    ),
]


@pytest.mark.parametrize(("text", "error"), RULES_CASES)
def test_rules_table(text: str, error: str | None, tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    if error is None:
        rules = read_rules(path)
        assert rules.rules[0].path == tmp_path / "drop"
        return
    with pytest.raises(SpecError) as info:
        read_rules(path)
    assert error in str(info.value)
    assert info.value.not_ready is False


def test_api_poll_timing_and_submit_rate_are_read_with_the_docs_defaults(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[[rules]]\nname = "a"\npath = "d"\n')
    plain = read_rules(path).api
    # No poll_first: the first poll is learned (None).
    assert (plain.poll_first, plain.poll_interval, plain.submit_rate) == (None, 5.0, None)
    path.write_text(
        "[api]\npoll_first = 1.5\npoll_interval = 8\nsubmit_rate = 12.5\n"
        '[[rules]]\nname = "a"\npath = "d"\n'
    )
    api = read_rules(path).api
    assert (api.poll_first, api.poll_interval, api.submit_rate) == (1.5, 8.0, 12.5)


def test_rules_problems_name_the_line_of_the_key_in_the_right_rule(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[[rules]]\nname = "a"\npath = "d"\nsettle = 1\n\n'
        '[[rules]]\nname = "b"\npath = "e"\nsettle = -1\n'
    )
    with pytest.raises(SpecError) as info:
        read_rules(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (9, 1)
    assert problem.message.startswith("rule 'b': settle")


def test_rule_paths_expand_home_and_resolve_against_the_rules_folder(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "conf" / "r.toml"
    path.parent.mkdir()
    path.write_text(
        '[[rules]]\nname = "a"\npath = "~/Drop"\n'
        '[[rules]]\nname = "b"\npath = "../shared/x"\n'
        '[rules.defaults]\nsize = "16:9"\n'
    )
    rules = read_rules(path)
    assert rules.rules[0].path == tmp_path / "home" / "Drop"
    assert rules.rules[1].path == tmp_path / "shared" / "x"
    assert rules.rules[1].defaults == FolderDefaults(size="16:9")
    assert rules.api.account_group == "default"


def test_rules_for_folders_makes_one_rule_per_folder_with_unique_names(tmp_path: Path) -> None:
    rules = rules_for_folders([tmp_path / "a" / "drop", tmp_path / "b" / "drop", tmp_path / "c"])
    assert [r.name for r in rules.rules] == ["drop", "drop-2", "c"]
    assert [r.path for r in rules.rules] == [
        tmp_path / "a" / "drop",
        tmp_path / "b" / "drop",
        tmp_path / "c",
    ]
    assert all(r.settle == 1.0 and r.poll == "auto" for r in rules.rules)


def test_shipped_rules_examples_are_valid() -> None:
    rules_dir = Path(__file__).resolve().parent.parent / "rules"
    for name in ("basic.rules.toml", "shared-drive.rules.toml"):
        assert read_rules(rules_dir / name).rules
