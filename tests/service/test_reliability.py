"""Hostile and broken inputs: each gets a clear 4xx in the one error shape, never a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from polyclip.service.app import create_app
from polyclip.service.config import Limits, Settings
from tests.images import b64, png_bytes, png_header
from tests.live import live_server, local_client, wait_queued


def err(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code and body["message"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.fixture
def strict(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    limits = Limits(
        max_items=4,
        max_text_chars=100,
        max_image_bytes=50_000,
        max_image_pixels=100_000,
        max_body_bytes=200_000,
    )
    settings = make_settings(
        limits=limits, models={n: {"max_queue_items": 8} for n in ("clip-tiny", "student-tiny")}
    )
    with local_client(create_app(settings)) as c:
        yield c


def test_bad_json_and_wrong_types(client: TestClient) -> None:
    r = client.post(
        "/embed/text",
        content=b'{"model": "student", "texts": [',
        headers={"content-type": "application/json"},
    )
    err(r, 400, "invalid_json")
    err(
        client.post("/embed/text", json={"model": "student", "texts": "one"}),
        422,
        "invalid_request",
        "texts",
    )
    err(
        client.post("/embed/text", json={"model": "student", "texts": [1]}),
        422,
        "invalid_request",
        "texts[0]",
    )
    err(
        client.post("/embed/text", json={"model": 5, "texts": ["a"]}),
        422,
        "invalid_request",
        "model",
    )
    err(
        client.post("/v1/embeddings", json={"model": "student", "input": [[1, 2]]}),
        422,
        "invalid_request",
    )
    err(
        client.post("/embed/text", json={"model": "student", "texts": ["a"], "x": 1}),
        422,
        "invalid_request",
        "x",
    )
    err(client.post("/embed/text", json=["a"]), 422, "invalid_request")
    item = {"text": "a", "image": "b"}
    err(
        client.post("/collections/c/points", json={"items": [item]}),
        422,
        "invalid_request",
        "items[0]",
    )
    err(
        client.post("/collections/c/points", json={"items": [{"id": -1, "text": "a"}]}),
        422,
        "invalid_request",
    )
    err(
        client.post("/collections/c/points", json={"items": [{"id": "not-a-uuid", "text": "a"}]}),
        422,
        "invalid_request",
    )
    err(
        client.post("/collections/c/search", json={"query": {"text": "a"}, "limit": 0}),
        422,
        "invalid_request",
        "limit",
    )


def test_empty_inputs(client: TestClient) -> None:
    err(
        client.post("/embed/text", json={"model": "student", "texts": []}),
        422,
        "invalid_request",
        "texts",
    )
    err(
        client.post("/v1/embeddings", json={"model": "student", "input": []}),
        422,
        "invalid_request",
        "input",
    )
    err(
        client.post("/embed/image", json={"model": "teacher", "images": []}),
        422,
        "invalid_request",
        "images",
    )
    err(client.post("/collections/c/points", json={"items": []}), 422, "invalid_request", "items")
    err(client.post("/collections/c/search", json={"query": {}}), 422, "invalid_request", "query")
    err(
        client.post("/embed/text", content=b"", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    r = client.post("/embed/text", json={"model": "student", "texts": [""]})
    assert r.status_code == 200  # an empty string is a valid text (special tokens only)


def test_unknown_model_collection_route(client: TestClient) -> None:
    err(
        client.post("/embed/text", json={"model": "gpt-9", "texts": ["a"]}),
        404,
        "model_not_found",
        "model",
    )
    err(client.get("/collections/nope"), 404, "collection_not_found", "name")
    err(
        client.post("/collections/nope/search", json={"query": {"text": "a"}}),
        404,
        "collection_not_found",
    )
    err(
        client.post("/collections/nope/points", json={"items": [{"text": "a"}]}),
        404,
        "collection_not_found",
    )
    err(
        client.post("/collections", json={"name": "c", "model": "gpt-9"}),
        404,
        "model_not_found",
        "model",
    )
    err(client.get("/nowhere"), 404, "not_found")
    err(client.put("/embed/text"), 405, "method_not_allowed")
    err(
        client.post("/collections", json={"name": "../etc", "model": "teacher"}),
        422,
        "invalid_request",
        "name",
    )
    err(client.get("/collections/..%2Fetc"), 404, "not_found")


def test_size_limits(strict: TestClient) -> None:
    texts = {"model": "student", "texts": ["a"] * 5}
    err(strict.post("/embed/text", json=texts), 413, "too_many_items", "texts")
    err(
        strict.post("/v1/embeddings", json={"model": "student", "input": ["a", "x" * 101]}),
        413,
        "text_too_long",
        "input[1]",
    )
    err(
        strict.post(
            "/embed/text", content=b"x" * 200_001, headers={"content-type": "application/json"}
        ),
        413,
        "body_too_large",
    )
    strict.post("/collections", json={"name": "c", "model": "teacher"})
    items = {"items": [{"text": "a"}] * 5}
    err(strict.post("/collections/c/points", json=items), 413, "too_many_items", "items")
    err(
        strict.post("/collections/c/points", json={"items": [{"text": "a"}, {"text": "b" * 101}]}),
        413,
        "text_too_long",
        "items[1].text",
    )


def test_streamed_body_over_the_limit(strict: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "student", "texts": ["'
        for _ in range(30):
            yield b"a" * 10_000

    r = strict.post("/embed/text", content=chunks(), headers={"content-type": "application/json"})
    err(r, 413, "body_too_large")


def test_bad_images(strict: TestClient) -> None:
    def image(ref: str) -> httpx.Response:
        return strict.post("/embed/image", json={"model": "teacher", "images": [ref]})

    err(image("not base64 at all!"), 422, "invalid_base64", "images[0]")
    err(image(b64(b"%PDF-1.4 definitely not an image")), 422, "invalid_image", "images[0]")
    err(image(b64(png_bytes()[:60])), 422, "invalid_image", "images[0]")  # truncated PNG
    err(image(b64(b"\0" * 60_000)), 413, "image_too_large", "images[0]")  # bytes
    err(image(b64(png_bytes((1000, 1000)))), 413, "image_too_large", "images[0]")  # pixels
    bomb = png_header(100_000, 100_000)  # 10^10 pixels declared in 60 bytes
    r = strict.post(
        "/embed/image", data={"model": "teacher"}, files=[("images", ("b.png", bomb, "image/png"))]
    )
    err(r, 413, "image_too_large", "images[0]")
    err(image(b64(png_bytes(fmt="JPEG")) + "@@"), 422, "invalid_base64")
    err(
        strict.post("/embed/image", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    r = strict.post(
        "/embed/image",
        data={"model": "teacher"},
        files=[("images", ("a.txt", b"hello", "text/plain"))],
    )
    err(r, 422, "invalid_image", "images[0]")
    err(strict.post("/embed/image", data={"model": "teacher"}), 422, "invalid_request", "images")
    r = strict.post("/collections", json={"name": "p", "model": "teacher"})
    r = strict.post("/collections/p/points", json={"items": [{"text": "a"}, {"image": "!!"}]})
    err(r, 422, "invalid_base64", "items[1].image")
    assert strict.get("/collections/p").json()["points_count"] == 0  # all or nothing


def test_image_urls_are_off_by_default_and_private_hosts_refused(
    client: TestClient, make_settings: Callable[..., Settings]
) -> None:
    r = client.post(
        "/embed/image", json={"model": "teacher", "images": ["http://example.com/a.png"]}
    )
    err(r, 422, "image_urls_disabled", "images[0]")
    # A second app beside the first: its own store (one process holds an embedded store).
    settings = make_settings(limits=Limits(allow_image_urls=True), qdrant_url=":memory:")
    with local_client(create_app(settings)) as c:
        for url in (
            "http://127.0.0.1:9/a.png",
            "http://localhost/a.png",
            "http://10.1.2.3/a.png",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/a.png",
            "http://[::ffff:127.0.0.1]/a.png",
        ):
            r = c.post("/embed/image", json={"model": "teacher", "images": [url]})
            err(r, 422, "forbidden_address", "images[0]")
        r = c.post("/embed/image", json={"model": "teacher", "images": ["file:///etc/passwd"]})
        err(r, 422, "invalid_base64")  # not a URL scheme we fetch: treated as (bad) base64


def test_api_key(make_settings: Callable[..., Settings]) -> None:
    with local_client(create_app(make_settings(api_key="s3cret"))) as c:
        body = {"model": "student", "texts": ["a"]}
        r = c.post("/embed/text", json=body)
        err(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        err(
            c.post("/embed/text", json=body, headers={"Authorization": "Bearer nope"}),
            401,
            "unauthorized",
        )
        err(
            c.post("/embed/text", json=body, headers={"Authorization": "Basic czNjcmV0"}),
            401,
            "unauthorized",
        )
        err(c.get("/v1/models"), 401, "unauthorized")
        err(c.post("/admin/reload"), 401, "unauthorized")
        err(c.get("/collections"), 401, "unauthorized")
        assert (
            c.post("/embed/text", json=body, headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        for public in ("/health", "/ready", "/metrics"):
            assert c.get(public).status_code == 200


def test_full_queue_is_429_with_retry_after(make_settings: Callable[..., Settings]) -> None:
    # The worker holds a lone request for 1.5 s waiting for company: the queue fills up.
    slow = {"max_wait_ms": 1500, "max_queue_items": 4}
    settings = make_settings(limits=Limits(max_items=4), models={"student-tiny": slow})

    async def main(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            first = asyncio.create_task(
                http.post("/embed/text", json={"model": "student", "texts": ["a"] * 4})
            )
            await wait_queued(http, "student-tiny", 4)
            second = await http.post("/embed/text", json={"model": "student", "texts": ["b"]})
            return [await first, second]

    with live_server(settings) as base:
        first, second = asyncio.run(main(base))
    assert first.status_code == 200
    err(second, 429, "queue_full")
    assert second.headers["retry-after"] == "1"


def test_slow_model_is_a_504_and_the_server_recovers(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        limits=Limits(request_timeout_s=1), models={"student-tiny": {"max_wait_ms": 3000}}
    )
    with local_client(create_app(settings)) as c:
        c.post("/embed/text", json={"model": "teacher", "texts": ["warm up"]})
        err(c.post("/embed/text", json={"model": "student", "texts": ["a"]}), 504, "timeout")
        assert c.post("/embed/text", json={"model": "teacher", "texts": ["a"]}).status_code == 200
