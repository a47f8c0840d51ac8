"""The emulator serves every model of the nano-banana family as its page documents it, over
real sockets: what each accepts and refuses, the pixel size of its results, the official
models' output format, and the exact body each paid task carried."""

from __future__ import annotations

import ast
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from harness import CANARY
from promptdrop.emulator import Emulator

Factory = Callable[..., Emulator]

G25 = "gemini-2.5-flash-image-preview"
G25O = "gemini-2.5-flash-image-official"
G3P = "gemini-3-pro-image-preview"
G3PO = "gemini-3-pro-image-preview-official"
G31 = "gemini-3.1-flash-image-preview"
G31O = "gemini-3.1-flash-image-preview-official"
ALL = (G25, G25O, G3P, G3PO, G31, G31O)
OFFICIAL = (G25O, G3PO, G31O)
ALIASES = {
    "nano-banana": G25,
    "nano-banana-official": G25O,
    "nano-banana-pro": G3P,
    "nano-banana-pro-official": G3PO,
    "nano-banana-2-lite-official": G31O,
    "nano-banana-2-official": G31O,
}


def api(emu: Emulator) -> httpx.Client:
    return httpx.Client(
        base_url=emu.base_url, headers={"Authorization": f"Bearer {CANARY}"}, timeout=10.0
    )


def body(model: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"model": model, "prompt": "A lighthouse at dusk", "n": 1}
    request.update(overrides)
    return {k: v for k, v in request.items() if v is not ...}


def urls(count: int, objects: bool = False) -> list[Any]:
    plain = [f"https://example.com/ref{i}.png" for i in range(count)]
    return [{"url": u} for u in plain] if objects else plain


def wait_final(client: httpx.Client, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = client.get(f"/v1/images/generations/{task_id}").json()
        if task["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return task
        time.sleep(0.02)


def made(emu: Emulator, request: dict[str, Any]) -> tuple[dict[str, Any], list[httpx.Response]]:
    """Submit, wait for the task, download every result; return the task and the downloads."""
    with api(emu) as client, httpx.Client(timeout=10.0) as files:
        created = client.post("/v1/images/generations", json=request)
        assert created.status_code == 200, created.text
        task = wait_final(client, created.json()["id"])
        assert task["status"] == "completed", task
        downloads = [files.get(item["url"]) for item in task["result"]["data"]]
    assert all(d.status_code == 200 for d in downloads)
    return task, downloads


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()  # the whole image decodes, not only its header
    return img


OFFICIAL_OPTIONS = {
    "temperature": 2,
    "topP": 0.0,
    "maxOutputTokens": 65536,
    "personGeneration": "ALLOW_ADULT",
    "imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 0},
    "safetySettings": [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"},
    ],
}
THINKING = {"thinkingConfig": {"thinkingBudget": 24576, "thinkingLevel": "MINIMAL"}}

# (what, body, expected status, expected error param or None)
ROWS: list[tuple[str, dict[str, Any], int, str | None]] = [
    # --- every model: the business id, top level or in metadata; unknown models
    *[
        (f"{m} takes client_business_id", body(m, client_business_id="order-1"), 200, None)
        for m in ALL
    ],
    *[
        (
            f"{m} takes metadata.client_business_id",
            body(m, metadata={"client_business_id": "order-2"}),
            200,
            None,
        )
        for m in ALL
    ],
    ("a business id is a string", body(G3P, client_business_id=7), 400, "client_business_id"),
    (
        "metadata's business id is a string",
        body(G31, metadata={"client_business_id": ["x"]}),
        400,
        "metadata.client_business_id",
    ),
    ("an unknown model", body("gemini-4-image"), 400, "model"),
    ("gemini-3.1-flash has no alias", body("nano-banana-2"), 400, "model"),
    # --- gemini-2.5-flash-image-preview (the default)
    (
        "G25: 1K, orientation, URL objects and strings",
        body(
            "nano-banana",
            size="2:3",
            image_urls=[*urls(7, objects=True), *urls(7)],
            metadata={"resolution": "1K", "orientation": "landscape"},
        ),
        200,
        None,
    ),
    ("G25: 1000 characters", body(G25, prompt="p" * 1000), 200, None),
    ("G25: 1001 characters", body(G25, prompt="p" * 1001), 400, "prompt"),
    ("G25: no 21:9", body(G25, size="21:9"), 400, "size"),
    ("G25: no 2K", body(G25, metadata={"resolution": "2K"}), 400, "metadata.resolution"),
    ("G25: n is 1", body(G25, n=2), 400, "n"),
    ("G25: 15 references", body(G25, image_urls=urls(15)), 400, "image_urls"),
    (
        "G25: no official options",
        body(G25, metadata={"temperature": 1.0}),
        400,
        "metadata.temperature",
    ),
    (
        "G25: no undocumented key",
        body(G25, metadata={"seed": 42}),
        400,
        "metadata.seed",
    ),
    (
        "G25: a URL object has only url",
        body(G25, image_urls=[{"url": "https://example.com/a.png", "weight": 1}]),
        400,
        "image_urls[0]",
    ),
    # --- gemini-2.5-flash-image-official
    (
        "G25o: every option, 21:9, 3 references, a long prompt",
        body(
            "nano-banana-official",
            prompt="q" * 3000,
            size="21:9",
            image_urls=urls(3),
            metadata=OFFICIAL_OPTIONS,
        ),
        200,
        None,
    ),
    ("G25o: 4 references", body(G25O, image_urls=urls(4)), 400, "image_urls"),
    (
        "G25o: strings only",
        body(G25O, image_urls=urls(1, objects=True)),
        400,
        "image_urls[0]",
    ),
    ("G25o: no resolution", body(G25O, metadata={"resolution": "1K"}), 400, "metadata.resolution"),
    (
        "G25o: no orientation",
        body(G25O, metadata={"orientation": "portrait"}),
        400,
        "metadata.orientation",
    ),
    ("G25o: no thinking", body(G25O, metadata=THINKING), 400, "metadata.thinkingConfig"),
    (
        "G25o: temperature up to 2",
        body(G25O, metadata={"temperature": 2.01}),
        400,
        "metadata.temperature",
    ),
    ("G25o: topP is a number", body(G25O, metadata={"topP": True}), 400, "metadata.topP"),
    (
        "G25o: topP up to 1",
        body(G25O, metadata={"topP": 1.5}),
        400,
        "metadata.topP",
    ),
    (
        "G25o: maxOutputTokens at least 1",
        body(G25O, metadata={"maxOutputTokens": 0}),
        400,
        "metadata.maxOutputTokens",
    ),
    (
        "G25o: maxOutputTokens an integer",
        body(G25O, metadata={"maxOutputTokens": 100.0}),
        400,
        "metadata.maxOutputTokens",
    ),
    (
        "G25o: personGeneration enum",
        body(G25O, metadata={"personGeneration": "ALLOW_SOME"}),
        400,
        "metadata.personGeneration",
    ),
    (
        "G25o: mimeType enum",
        body(G25O, metadata={"imageOutputOptions": {"mimeType": "image/gif"}}),
        400,
        "metadata.imageOutputOptions.mimeType",
    ),
    (
        "G25o: compressionQuality only with JPEG",
        body(
            G25O,
            metadata={"imageOutputOptions": {"mimeType": "image/png", "compressionQuality": 80}},
        ),
        400,
        "metadata.imageOutputOptions.compressionQuality",
    ),
    (
        "G25o: compressionQuality without a mimeType",
        body(G25O, metadata={"imageOutputOptions": {"compressionQuality": 80}}),
        400,
        "metadata.imageOutputOptions.compressionQuality",
    ),
    (
        "G25o: compressionQuality up to 100",
        body(
            G25O,
            metadata={"imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 101}},
        ),
        400,
        "metadata.imageOutputOptions.compressionQuality",
    ),
    (
        "G25o: no undocumented output option",
        body(G25O, metadata={"imageOutputOptions": {"mimeType": "image/png", "dpi": 300}}),
        400,
        "metadata.imageOutputOptions.dpi",
    ),
    (
        "G25o: safety category enum",
        body(G25O, metadata={"safetySettings": [{"category": "HARM", "threshold": "OFF"}]}),
        400,
        "metadata.safetySettings[0].category",
    ),
    (
        "G25o: safety threshold required",
        body(G25O, metadata={"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT"}]}),
        400,
        "metadata.safetySettings[0].threshold",
    ),
    (
        "G25o: safetySettings is a list",
        body(G25O, metadata={"safetySettings": {"category": "HARM_CATEGORY_HARASSMENT"}}),
        400,
        "metadata.safetySettings",
    ),
    # --- gemini-3-pro-image-preview
    (
        "G3P: 21:9 4K, orientation, 14 URL objects, a long prompt",
        body(
            "nano-banana-pro",
            prompt="r" * 5000,
            size="21:9",
            image_urls=urls(14, objects=True),
            metadata={"resolution": "4K", "orientation": "portrait"},
        ),
        200,
        None,
    ),
    ("G3P: no 0.5K", body(G3P, metadata={"resolution": "0.5K"}), 400, "metadata.resolution"),
    ("G3P: no 1:8", body(G3P, size="1:8"), 400, "size"),
    ("G3P: n is 1", body(G3P, n=4), 400, "n"),
    (
        "G3P: no google search",
        body(G3P, metadata={"google_search": True}),
        400,
        "metadata.google_search",
    ),
    ("G3P: 15 references", body(G3P, image_urls=urls(15, objects=True)), 400, "image_urls"),
    # --- gemini-3-pro-image-preview-official
    (
        "G3Po: thinking, 2K, every option, 14 references",
        body(
            "nano-banana-pro-official",
            size="4:5",
            image_urls=urls(14),
            metadata={"resolution": "2K", **OFFICIAL_OPTIONS, **THINKING},
        ),
        200,
        None,
    ),
    (
        "G3Po: thinkingBudget up to 24576",
        body(G3PO, metadata={"thinkingConfig": {"thinkingBudget": 24577}}),
        400,
        "metadata.thinkingConfig.thinkingBudget",
    ),
    (
        "G3Po: thinkingLevel enum",
        body(G3PO, metadata={"thinkingConfig": {"thinkingLevel": "EXTREME"}}),
        400,
        "metadata.thinkingConfig.thinkingLevel",
    ),
    (
        "G3Po: no undocumented thinking key",
        body(G3PO, metadata={"thinkingConfig": {"includeThoughts": True}}),
        400,
        "metadata.thinkingConfig.includeThoughts",
    ),
    (
        "G3Po: no orientation",
        body(G3PO, metadata={"orientation": "landscape"}),
        400,
        "metadata.orientation",
    ),
    ("G3Po: strings only", body(G3PO, image_urls=urls(1, objects=True)), 400, "image_urls[0]"),
    ("G3Po: n is 1", body(G3PO, n=2), 400, "n"),
    # --- gemini-3.1-flash-image-preview
    (
        "G31: n 4, 1:8 0.5K, both searches, 14 URL objects",
        body(
            G31,
            n=4,
            size="1:8",
            image_urls=urls(14, objects=True),
            metadata={"resolution": "0.5K", "google_search": True, "google_image_search": True},
        ),
        200,
        None,
    ),
    ("G31: n omitted", body(G31, n=..., size="4:1"), 200, None),
    (
        "G31: image search off without web search",
        body(G31, metadata={"google_image_search": False}),
        200,
        None,
    ),
    ("G31: n up to 4", body(G31, n=5), 400, "n"),
    ("G31: n at least 1", body(G31, n=0), 400, "n"),
    ("G31: a quoted n", body(G31, n="2"), 400, "n"),
    ("G31: a boolean n", body(G31, n=True), 400, "n"),
    (
        "G31: image search needs web search",
        body(G31, metadata={"google_image_search": True}),
        400,
        "metadata.google_image_search",
    ),
    (
        "G31: google_search is a boolean",
        body(G31, metadata={"google_search": "yes"}),
        400,
        "metadata.google_search",
    ),
    (
        "G31: no orientation",
        body(G31, metadata={"orientation": "landscape"}),
        400,
        "metadata.orientation",
    ),
    ("G31: no official options", body(G31, metadata={"topP": 0.5}), 400, "metadata.topP"),
    ("G31: no 8K", body(G31, metadata={"resolution": "8K"}), 400, "metadata.resolution"),
    # --- gemini-3.1-flash-image-preview-official
    *[
        (
            f"G31o as {alias}: 8:1 4K",
            body(alias, size="8:1", metadata={"resolution": "4K", **THINKING}),
            200,
            None,
        )
        for alias in (G31O, "nano-banana-2-lite-official", "nano-banana-2-official")
    ],
    ("G31o: no 1:8", body(G31O, size="1:8"), 400, "size"),
    ("G31o: no 1:4", body(G31O, size="1:4"), 400, "size"),
    ("G31o: no 0.5K", body(G31O, metadata={"resolution": "0.5K"}), 400, "metadata.resolution"),
    (
        "G31o: no google search",
        body(G31O, metadata={"google_search": False}),
        400,
        "metadata.google_search",
    ),
    ("G31o: n is 1", body(G31O, n=3), 400, "n"),
]


@pytest.mark.parametrize(
    ("request_body", "status", "param"),
    [pytest.param(b, s, p, id=what) for what, b, s, p in ROWS],
)
def test_each_model_accepts_and_refuses_what_its_page_documents(
    emulator: Emulator, request_body: dict[str, Any], status: int, param: str | None
) -> None:
    with api(emulator) as client:
        resp = client.post("/v1/images/generations", json=request_body)
    assert resp.status_code == status, resp.text
    submissions = emulator.stats()["submissions"]
    if status == 200:
        assert resp.json()["status"] == "queued"
        assert len(submissions) == 1
        return
    error = resp.json()["error"]
    assert (error["code"], error["type"]) == ("invalid_request", "invalid_request_error")
    assert error.get("param") == param
    assert submissions == []


def test_the_table_has_rows_for_every_model_both_ways() -> None:
    """At least 25 rows, and each model has an accepted and a refused one."""
    assert len(ROWS) >= 25
    seen: dict[str, set[int]] = {}
    for _, request, status, _ in ROWS:
        model = ALIASES.get(request["model"], request["model"])
        seen.setdefault(model, set()).add(status)
    assert all(seen[model] == {200, 400} for model in ALL), seen


@pytest.mark.parametrize(
    ("model", "sizes"),
    [
        (G25, "1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3"),
        (G3P, "1:1, 3:2, 2:3, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9"),
        (G31, "1:1, 3:2, 2:3, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, 1:4, 4:1, 1:8, 8:1"),
        (G31O, "1:1, 3:2, 2:3, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, 4:1, 8:1"),
    ],
)
def test_a_wrong_size_names_the_sizes_of_that_model(
    emulator: Emulator, model: str, sizes: str
) -> None:
    with api(emulator) as client:
        resp = client.post("/v1/images/generations", json=body(model, size="7:3"))
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == f"The 'size' field must be one of: {sizes}."


def test_an_undocumented_metadata_key_is_named_with_its_model(emulator: Emulator) -> None:
    with api(emulator) as client:
        resp = client.post("/v1/images/generations", json=body(G3P, metadata={"temperature": 1.0}))
    assert resp.json()["error"]["message"] == (
        f"metadata.temperature is not a parameter of the model '{G3P}'."
    )


# --- result images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "resolution", "pixels"),
    [
        (G3P, "21:9", "4K", (4096, 1755)),
        (G31, "1:8", "0.5K", (64, 512)),
        (G31, "8:1", "2K", (2048, 256)),
        (G31, "4:5", "4K", (3277, 4096)),
        (G31, "16:9", None, (1024, 576)),
        (G3P, "3:2", "2K", (2048, 1365)),
        (G3P, "1:1", None, (1024, 1024)),
        (G3PO, "9:16", "2K", (1152, 2048)),
        (G31O, "4:1", "1K", (1024, 256)),
        (G25O, "21:9", None, (1024, 439)),
        (G25, "16:9", "1K", (1792, 1024)),
        (G25, "4:3", None, (1365, 1024)),
    ],
)
def test_results_have_the_pixels_of_their_size_and_resolution(
    emulator: Emulator, model: str, size: str, resolution: str | None, pixels: tuple[int, int]
) -> None:
    metadata = {"resolution": resolution} if resolution else {}
    _, [download] = made(emulator, body(model, size=size, metadata=metadata))
    assert opened(download.content).size == pixels


def test_a_4k_result_stays_small(emulator: Emulator) -> None:
    """Flat colour: a 4096-pixel PNG is a few hundred kilobytes (how long it takes is for a
    benchmark, not a test, on a shared machine)."""
    _, [download] = made(
        emulator, body(G3P, prompt="big", size="1:1", metadata={"resolution": "4K"})
    )
    assert opened(download.content).size == (4096, 4096)
    assert len(download.content) < 2_000_000


@pytest.mark.parametrize(
    ("mime", "pillow", "extension"),
    [("image/jpeg", "JPEG", ".jpg"), ("image/webp", "WEBP", ".webp"), ("image/png", "PNG", ".png")],
)
@pytest.mark.parametrize("model", OFFICIAL)
def test_an_official_model_returns_the_format_its_mime_type_asks_for(
    factory_emu: Factory, model: str, mime: str, pillow: str, extension: str
) -> None:
    # The configured format is the other one: only the request can make it `pillow`.
    emu = factory_emu(image_format="jpeg" if pillow == "PNG" else "png")
    task, [download] = made(
        emu, body(model, size="3:2", metadata={"imageOutputOptions": {"mimeType": mime}})
    )
    url = task["result"]["data"][0]["url"]
    assert url.endswith(extension)
    assert download.headers["content-type"] == mime
    img = opened(download.content)
    assert img.format == pillow
    assert img.size == (1024, 683)


@pytest.mark.parametrize(
    ("configured", "pillow", "extension"), [("png", "PNG", ".png"), ("jpeg", "JPEG", ".jpg")]
)
def test_an_official_model_without_a_mime_type_uses_the_configured_format(
    factory_emu: Factory, configured: str, pillow: str, extension: str
) -> None:
    emu = factory_emu(image_format=configured)
    task, [download] = made(emu, body(G3PO))
    assert task["result"]["data"][0]["url"].endswith(extension)
    assert opened(download.content).format == pillow


def test_non_official_models_keep_jpg_urls_whatever_the_format(factory_emu: Factory) -> None:
    emu = factory_emu(image_format="png")
    for model in (G25, G3P, G31):
        task, [download] = made(emu, body(model))
        assert task["result"]["data"][0]["url"].endswith(".jpg")
        assert download.headers["content-type"] == "image/jpeg"
        assert opened(download.content).format == "PNG"


def test_compression_quality_sets_the_jpeg_quality(emulator: Emulator) -> None:
    sizes = {}
    for quality in (5, 95):
        options = {"mimeType": "image/jpeg", "compressionQuality": quality}
        _, [download] = made(
            emulator, body(G31O, prompt="same", metadata={"imageOutputOptions": options})
        )
        assert opened(download.content).format == "JPEG"
        sizes[quality] = len(download.content)
    assert sizes[5] < sizes[95]


def test_n_images_on_gemini_3_1_flash_are_n_different_results(emulator: Emulator) -> None:
    task, downloads = made(emulator, body(G31, n=3, size="1:4", metadata={"resolution": "0.5K"}))
    found = [item["url"] for item in task["result"]["data"]]
    assert len(found) == len(set(found)) == 3
    assert [opened(d.content).size for d in downloads] == [(128, 512)] * 3
    assert len({d.content for d in downloads}) == 3


@pytest.mark.parametrize("n", [1, ...])
def test_one_image_when_n_is_1_or_omitted(emulator: Emulator, n: Any) -> None:
    task, [download] = made(emulator, body(G31, n=n))
    assert len(task["result"]["data"]) == 1
    assert opened(download.content).size == (1024, 1024)


# --- what the task carried -----------------------------------------------------------------


def test_stats_show_the_whole_body_each_task_was_submitted_with(emulator: Emulator) -> None:
    sent = [
        body(G3P, size="21:9", metadata={"resolution": "4K"}),
        body(
            G31O,
            size="8:1",
            image_urls=urls(2),
            client_business_id="job-9",
            metadata={"imageOutputOptions": {"mimeType": "image/jpeg"}, **THINKING},
        ),
    ]
    with api(emulator) as client:
        ids = [client.post("/v1/images/generations", json=b).json()["id"] for b in sent]
        refused = client.post("/v1/images/generations", json=body(G25, size="21:9"))
        over_http = client.get("/_emulator/stats").json()
    assert refused.status_code == 400
    submissions = over_http["submissions"]
    assert [s["task_id"] for s in submissions] == ids
    assert [s["body"] for s in submissions] == sent
    assert emulator.stats()["submissions"][1]["body"] == sent[1]


def test_the_stats_body_is_the_one_sent_not_a_normalised_one(emulator: Emulator) -> None:
    """Aliases, URL objects and an omitted n stay as they were sent."""
    sent = body("nano-banana-pro", n=..., image_urls=urls(1, objects=True))
    with api(emulator) as client:
        assert client.post("/v1/images/generations", json=sent).status_code == 200
    [submission] = emulator.stats()["submissions"]
    assert submission["body"] == sent
    assert set(submission["body"]) == {"model", "prompt", "image_urls"}
    assert submission["image_urls"] == ["https://example.com/ref0.png"]


@pytest.mark.parametrize("where", ["top", "metadata"])
def test_a_task_is_found_and_echoed_by_its_client_business_id(
    emulator: Emulator, where: str
) -> None:
    request = (
        body(G3P, client_business_id="order-77")
        if where == "top"
        else body(G3P, metadata={"client_business_id": "order-77"})
    )
    with api(emulator) as client:
        task_id = client.post("/v1/images/generations", json=request).json()["id"]
        by_id = wait_final(client, task_id)
        by_business_id = client.get("/v1/images/generations/order-77")
        other = client.get("/v1/images/generations/order-78")
    assert by_id["client_business_id"] == "order-77"
    assert by_business_id.status_code == 200
    assert by_business_id.json()["id"] == task_id
    assert other.status_code == 404


def test_without_a_business_id_the_task_answer_has_none(emulator: Emulator) -> None:
    task, _ = made(emulator, body(G25))
    assert "client_business_id" not in task


def test_the_emulator_reads_the_docs_itself_not_the_clients_table() -> None:
    """No emulator module imports promptdrop.capabilities: a mistake there is caught here."""
    folder = Path(__file__).resolve().parents[1] / "daemon" / "promptdrop" / "emulator"
    imported = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
    assert len(list(folder.glob("*.py"))) > 10
    assert "promptdrop.emulator.models" in imported
    assert not any("capabilities" in name for name in imported)


# --- fixture ---------------------------------------------------------------------------------


@pytest.fixture
def factory_emu(emulator_factory: Factory) -> Factory:
    """emulator_factory with fast tasks and no rate limits unless overridden."""

    def make(**kwargs: Any) -> Emulator:
        settings: dict[str, Any] = {"latency": 0.05, "rate_limits": None}
        settings.update(kwargs)
        return emulator_factory(**settings)

    return make
