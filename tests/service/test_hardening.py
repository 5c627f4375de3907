"""Hostile clients, one test per class of attack: each got a 5xx, a hang, a dropped connection or a
wrong 2xx before these bounds existed. Bounds are shown to refuse *before* the work (a decode
counter, a condition count), never by timing."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

import polyclip.service.images as images
from polyclip.service.app import create_app
from polyclip.service.config import ConfigError, Limits, Settings, load_settings
from polyclip.service.filters import MAX_FILTER_CONDITIONS
from polyclip.service.store import PointRecord
from tests.images import b64, png_bytes
from tests.live import live_server, local_client

JSON = {"content-type": "application/json"}


def err(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()["error"]
    assert body["code"] == code and body["message"], body
    assert body["request_id"] == r.headers["x-request-id"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def one_bit_png(width: int, height: int) -> bytes:
    """A tiny file that decodes to width x height pixels (what the bomb in the report was)."""
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture
def api(make_settings: Callable[..., Settings]):
    with local_client(create_app(make_settings())) as c:
        assert c.post("/collections", json={"name": "docs", "model": "teacher"}).status_code == 201
        yield c


# ---- data and store ------------------------------------------------------------------------
def test_payloads_the_store_cannot_hold_are_refused(api) -> None:
    deep: dict = {}
    cur = deep
    for _ in range(130):  # the report's poisoned point: ~1 KB, 130 levels
        cur["a"] = {}
        cur = cur["a"]

    def upsert(payload: object) -> httpx.Response:
        return api.post("/collections/docs/points", json={"items": [
            {"id": 1, "text": "a dog", "payload": payload}]})  # fmt: skip

    err(upsert(deep), 422, "payload_too_deep")
    for raw in (b'{"v": NaN}', b'{"v": Infinity}', b'{"v": -Infinity}'):
        body = b'{"items": [{"id": 1, "text": "a", "payload": ' + raw + b"}]}"
        err(api.post("/collections/docs/points", content=body, headers=JSON), 422,
            "invalid_payload", "items[0].payload.v")  # fmt: skip
    body = b'{"items": [{"id": 1, "text": "a", "payload": {"\\ud800": 1}}]}'
    err(api.post("/collections/docs/points", content=body, headers=JSON), 422, "invalid_payload")
    body = b'{"items": [{"id": 1, "text": "a", "payload": {"k": ["ok", "\\udfff"]}}]}'
    err(api.post("/collections/docs/points", content=body, headers=JSON), 422, "invalid_payload",
        "items[0].payload.k[1]")  # fmt: skip
    err(upsert({"big": 2**64}), 422, "invalid_payload", "items[0].payload.big")
    err(upsert({f"k{i}": i for i in range(2000)}), 413, "payload_too_large")
    err(upsert({"text": "x" * 70_000}), 413, "payload_too_large")
    # Nothing was written, and the collection still searches, filtered or not.
    assert api.get("/collections/docs").json()["points_count"] == 0
    ok = upsert({"lang": "en", "n": 2**63 - 1, "nested": {"a": [{"b": True}, {"b": False}]}})
    assert ok.status_code == 200, ok.text
    flt = {"must": [{"key": "lang", "match": {"value": "en"}}]}
    r = api.post("/collections/docs/search", json={"query": {"text": "dog"}, "filter": flt})
    assert r.status_code == 200 and [h["id"] for h in r.json()["results"]] == [1]


def test_a_poisoned_collection_is_quarantined_and_the_rest_serves(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A point written past the API's bounds (an older version, another tool) makes the engine
    panic on a filtered search: a JSON 503 that echoes nothing of the engine. After a restart
    whose WAL replay fails, that collection is quarantined and reported; the others serve."""
    settings = make_settings(data_dir=tmp_path / "q")
    deep: dict = {}
    cur = deep
    for _ in range(130):
        cur["a"] = {}
        cur = cur["a"]
    flt = {"must": [{"key": "a", "match": {"value": 1}}]}
    query = {"query": {"text": "a"}, "filter": flt}
    with local_client(create_app(settings)) as c:
        for name in ("bad", "good"):
            assert c.post("/collections", json={"name": name, "model": "teacher"}).is_success
            c.post(
                f"/collections/{name}/points",
                json={"items": [{"id": 1, "text": "a", "payload": {"a": 1}}]},
            )
        store = c.app.state.svc.collections.store  # past the API: no payload bounds here
        vector = store.get("bad").spaces[0].vector
        store.upsert("bad", [PointRecord(2, {vector: [1.0] + [0.0] * 15}, {"a": deep})])
        body = err(c.post("/collections/bad/search", json=query), 503, "store_unavailable")
        assert "recursion" not in body["message"] and "Payload" not in body["message"]
        r = c.post("/collections/good/search", json=query)
        assert r.status_code == 200 and len(r.json()["results"]) == 1
    with local_client(create_app(settings)) as c:  # the replay of "bad" fails: quarantined
        ready = c.get("/ready")
        assert ready.status_code == 200
        why = ready.json()["quarantined"]["bad"]
        assert "cannot be opened" in why and str(tmp_path) not in why
        assert "te_store_quarantined_collections 1.0" in c.get("/metrics").text
        err(c.post("/collections/bad/search", json=query), 503, "collection_quarantined", "name")
        assert c.post("/collections/good/search", json=query).is_success
        assert c.delete("/collections/bad").status_code == 204  # an operator can clear it
        assert "te_store_quarantined_collections 0.0" in c.get("/metrics").text
        assert c.post("/collections", json={"name": "bad", "model": "teacher"}).status_code == 201


def test_concurrent_create_and_drop_of_one_name(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(data_dir=tmp_path / "q")

    async def storm(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            jobs = []
            for i in range(40):
                if i % 2:
                    jobs.append(http.delete("/collections/race"))
                else:
                    jobs.append(
                        http.post("/collections", json={"name": "race", "model": "teacher"})
                    )
            return [r.status_code for r in await asyncio.gather(*jobs)]

    with live_server(settings) as base:
        codes = asyncio.run(storm(base))
        assert set(codes) <= {201, 204, 404, 409}, codes
        listed = "race" in httpx.get(f"{base}/collections").json()["collections"]
        on_disk = (tmp_path / "q" / "race" / "collection.json").is_file()
        assert listed == on_disk  # consistent, whichever won the last race
        if listed:
            r = httpx.post(f"{base}/collections/race/points", json={"items": [{"text": "a"}]})
            assert r.status_code == 200
    assert not list((tmp_path / "q").glob(".trash-*"))


def test_the_number_of_collections_is_bounded(make_settings: Callable[..., Settings]) -> None:
    with local_client(create_app(make_settings(limits=Limits(max_collections=2)))) as c:
        for name in ("a", "b"):
            assert c.post("/collections", json={"name": name, "model": "teacher"}).is_success
        err(c.post("/collections", json={"name": "c", "model": "teacher"}), 409,
            "too_many_collections", "name")  # fmt: skip
        assert c.delete("/collections/a").status_code == 204
        assert c.post("/collections", json={"name": "c", "model": "teacher"}).is_success


# ---- inputs --------------------------------------------------------------------------------
def test_lone_surrogates_and_bad_utf8_are_refused(api) -> None:
    cases = [
        ("/embed/text", b'{"model": "student", "texts": ["a \\ud800 b"]}', "texts[0]"),
        ("/v1/embeddings", b'{"model": "student", "input": "\\udc00"}', "input"),
        ("/v1/embeddings", b'{"model": "student", "input": ["ok", "x\\ud83d"]}', "input[1]"),
        ("/collections/docs/search", b'{"query": {"text": "\\ud800"}}', "query.text"),
        ("/collections/docs/points", b'{"items": [{"text": "\\ud800"}]}', "items[0].text"),
        ("/embed/image", b'{"model": "teacher", "images": ["\\ud800"]}', "images[0]"),
    ]
    for path, body, field in cases:
        err(api.post(path, content=body, headers=JSON), 422, "invalid_request", field)
    raw = b'{"model": "student", "texts": ["a \xff\xfe b"]}'  # not UTF-8 at all
    err(api.post("/embed/text", content=raw, headers=JSON), 422, "invalid_text")


@pytest.mark.parametrize(
    "flt",
    [
        {"must": [{"key": key, "match": {"value": "x"}}]}
        for key in ("a[", "..", "$", "a b", "a..b", "")
    ]
    + [
        {"must": [{"key": "n", "match": {"value": 2**64}}]},
        {"must": [{"key": "n", "match": {"any": [1, -(2**63) - 1]}}]},
        {"should": [{"key": "n", "match": {"value": "\ud800"}}]},
    ],
)
def test_filter_keys_and_values_are_validated(api, flt: dict) -> None:
    body = json.dumps({"query": {"text": "a"}, "filter": flt}).encode()
    err(api.post("/collections/docs/search", content=body, headers=JSON), 422, "invalid_request")
    err(api.request("DELETE", "/collections/docs/points", content=json.dumps({"filter": flt}),
                    headers=JSON), 422, "invalid_request")  # fmt: skip


def test_filter_ranges_must_be_finite(api) -> None:
    for value in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"query": {"text": "a"}, "filter": {"must": [{"key": "n", "range": {"gt": '
        body += value + b"}}]}}"
        err(api.post("/collections/docs/search", content=body, headers=JSON), 422,
            "invalid_request")  # fmt: skip


def test_filter_size_is_bounded_before_it_is_built(api, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 per list let nesting multiply: 4 levels of 8 are 4,680 conditions. Refused from the
    raw count, before a single condition model exists."""

    def tree(depth: int, width: int) -> dict:
        if depth == 0:
            return {"key": "n", "match": {"value": 1}}
        return {"should": [tree(depth - 1, width) for _ in range(width)]}

    from polyclip.service import filters

    built = []
    monkeypatch.setattr(filters.Condition, "model_post_init",
                        lambda self, ctx: built.append(1))  # fmt: skip
    r = api.post("/collections/docs/search", json={"query": {"text": "a"}, "filter": tree(4, 8)})
    body = err(r, 422, "invalid_request")
    assert str(MAX_FILTER_CONDITIONS) in body["message"] and built == []
    err(api.post("/collections/docs/search", json={"query": {"text": "a"}, "filter": tree(8, 1)}),
        422, "invalid_request")  # fmt: skip
    huge = {"should": [{"key": "n", "match": {"any": ["x" * 200] * 100}}] * 64}  # 1.3 MB
    r = api.post("/collections/docs/search", json={"query": {"text": "a"}, "filter": huge})
    err(r, 413, "body_too_large")  # 1 MiB for a query: the parser is never handed megabytes


def test_images_refused_before_they_are_decoded(
    api, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda img: decoded.append(1) or real(img))
    # A text-only model: no image is even opened.
    r = api.post("/embed/image", json={"model": "student", "images": [b64(png_bytes())]})
    err(r, 422, "no_image_tower", "model")
    assert decoded == []
    # Three 6300x6300 one-bit PNGs: a few KB each, 40 MP each once decoded.
    bomb = b64(one_bit_png(6300, 6300))
    assert len(bomb) < 200_000
    r = api.post("/embed/image", json={"model": "teacher", "images": [bomb] * 3})
    err(r, 413, "images_too_large", "images")
    assert decoded == []
    r = api.post("/collections/docs/points", json={"items": [{"image": bomb}] * 3})
    err(r, 413, "images_too_large")
    assert decoded == []
    assert api.post("/embed/image", json={"model": "teacher", "images": [bomb]}).is_success
    assert decoded == [1]


def test_image_urls_malformed_embedded_private_rebinding_and_deadline(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(limits=Limits(allow_image_urls=True, url_timeout_s=0.5))
    with local_client(create_app(settings)) as c:

        def fetch(url: str) -> httpx.Response:
            return c.post("/embed/image", json={"model": "teacher", "images": [url]})

        for url in ("http://a:99999/x.png", "http://[::1/x.png", "http://a:port/x", "http:///x"):
            err(fetch(url), 422, "invalid_url", "images[0]")
        for url in ("http://[::ffff:10.0.0.5]/a", "http://[64:ff9b::a00:5]/a",
                    "http://[2002:a00:5::1]/a", "http://[::10.0.0.5]/a",
                    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffa]/a"):  # fmt: skip
            body = err(fetch(url), 422, "forbidden_address", "images[0]")
            assert "10.0.0" not in body["message"] and "not allowed" in body["message"]
        # DNS rebinding: the name is resolved once, and the connection goes to that address.
        answers = iter(["93.184.216.34", "127.0.0.1"])
        lookups = []

        async def getaddrinfo(host: str, port: int, **kw: object) -> list:
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

        seen: dict = {}

        class Captured(Exception):
            pass

        def stream(self: httpx.AsyncClient, method: str, url: str, **kw: object) -> object:
            seen.update(url=url, **kw)
            raise Captured

        monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo",
                            lambda loop, *a, **k: getaddrinfo(*a, **k))  # fmt: skip
        monkeypatch.setattr(httpx.AsyncClient, "stream", stream)
        fetch("https://images.example:8443/cat.png?size=2")
        assert lookups == ["images.example"]
        assert seen["url"] == "https://93.184.216.34:8443/cat.png?size=2"
        assert seen["headers"] == {"Host": "images.example:8443"}
        assert seen["extensions"] == {"sni_hostname": "images.example"}

    async def slow(url: str, limits: Limits, field: str) -> bytes:
        await asyncio.sleep(5)
        return b""

    monkeypatch.setattr(images, "_fetch", slow)
    with local_client(create_app(settings)) as c:
        start = time.monotonic()
        r = c.post("/embed/image", json={"model": "teacher", "images": ["http://a.example/x"]})
        assert time.monotonic() - start < 3
        err(r, 422, "image_fetch_failed", "images[0]")


# ---- access --------------------------------------------------------------------------------
def test_an_empty_api_key_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an unset variable gives in a Kubernetes secret: refused, not "no auth" by accident."""
    config = tmp_path / "models.yaml"
    config.write_text("models: {m: {path: .}}\n", encoding="utf-8")
    for key in ("", "  "):
        monkeypatch.setenv("POLYCLIP_API_KEY", key)
        with pytest.raises(ConfigError, match="api_key is set but empty"):
            load_settings(config)
    monkeypatch.delenv("POLYCLIP_API_KEY")
    assert load_settings(config).api_key is None  # unset: served without a key


def test_admin_routes_need_a_credential_or_a_loopback_client(
    make_settings: Callable[..., Settings],
) -> None:
    alias = {"target": "student"}
    with local_client(create_app(make_settings())) as c:  # no key, loopback both ways
        assert c.put("/admin/aliases/q", json=alias).status_code == 200
    app = create_app(make_settings())
    with local_client(app, client=("203.0.113.9", 4000)) as c:  # no key, a remote client
        err(c.put("/admin/aliases/q", json=alias), 403, "forbidden")
    with local_client(create_app(make_settings(host="0.0.0.0"))) as c:  # bound everywhere
        err(c.put("/admin/aliases/q", json=alias), 403, "forbidden")
    keys = make_settings(api_key="client", admin_api_key="admin")
    with local_client(create_app(keys)) as c:
        client = {"Authorization": "Bearer client"}
        err(c.put("/admin/aliases/q", json=alias, headers=client), 401, "unauthorized")
        ok = c.put("/admin/aliases/q", json=alias, headers={"Authorization": "Bearer admin"})
        assert ok.status_code == 200
        assert c.get("/v1/models", headers=client).status_code == 200
        err(c.get("/v1/models", headers={"Authorization": "Bearer admin"}), 401, "unauthorized")


def test_host_header_allow_list(make_settings: Callable[..., Settings]) -> None:
    evil = {"Host": "rebind.attacker.example"}
    with local_client(create_app(make_settings())) as c:
        err(c.get("/v1/models", headers=evil), 400, "invalid_host")
        for path in ("/health", "/ready", "/metrics"):
            assert c.get(path, headers=evil).status_code == 200
        assert c.get("/v1/models", headers={"Host": "localhost:8000"}).status_code == 200
    with local_client(create_app(make_settings(host="0.0.0.0"))) as c:
        assert c.get("/v1/models", headers=evil).status_code == 200
    settings = make_settings(host="0.0.0.0", allowed_hosts=["search.internal"])
    with local_client(create_app(settings)) as c:
        err(c.get("/v1/models", headers=evil), 400, "invalid_host")
        assert c.get("/v1/models", headers={"Host": "search.internal"}).status_code == 200


def test_cors_is_off_unless_allowed(make_settings: Callable[..., Settings]) -> None:
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with local_client(create_app(make_settings())) as c:
        r = c.options("/embed/text", headers=pre)
        assert "access-control-allow-origin" not in r.headers
    settings = make_settings(cors_origins=["https://app.example"], api_key="k")
    with local_client(create_app(settings)) as c:
        r = c.options("/embed/text", headers=pre)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        other = c.options("/embed/text", headers={**pre, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_request_ids_and_credentials_before_the_body(
    make_settings: Callable[..., Settings],
) -> None:
    with local_client(create_app(make_settings(api_key="k"))) as c:
        r = c.post("/embed/text", content=b"{not json", headers=JSON)
        err(r, 401, "unauthorized")  # the key first: the body was never parsed
        mine = c.get("/v1/models", headers={"X-Request-ID": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        odd = c.get("/nowhere", headers={"X-Request-ID": "bad id\n", "Authorization": "Bearer k"})
        body = err(odd, 404, "not_found")
        assert body["request_id"] != "bad id\n" and len(body["request_id"]) == 32


# ---- resources -----------------------------------------------------------------------------
def test_metric_labels_are_bounded(api) -> None:
    assert api.request("FROBNICATE", "/v1/models").status_code in (404, 405)
    api.post("/collections/docs/points", json={"items": [{"id": 1, "text": "a dog"}]})
    api.post("/collections/docs/search", json={"query": {"text": "a"}, "shadow": "student"})
    text = api.get("/metrics").text
    assert 'method="FROBNICATE"' not in text and 'method="other"' in text
    assert 'te_shadow_overlap_count{collection="docs"' in text
    assert api.delete("/collections/docs").status_code == 204
    assert 'collection="docs"' not in api.get("/metrics").text


def test_slow_bodies_get_a_408_and_the_in_flight_cap_a_503(
    make_settings: Callable[..., Settings],
) -> None:
    limits = Limits(request_read_timeout_s=0.5, max_concurrent_requests=1)
    slow = {"student-tiny": {"max_wait_ms": 1500}}  # a lone request waits 1.5 s for company
    with live_server(make_settings(limits=limits, models=slow)) as base:
        port = int(base.rsplit(":", 1)[1])
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = b"POST /embed/text HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
            s.sendall(head + b"Content-Type: application/json\r\n\r\n{")  # then nothing
            answer = b""
            while chunk := s.recv(65536):  # the server closes after a 408
                answer += chunk
            answer = answer.decode()
        assert time.monotonic() - start < 5
        assert answer.startswith("HTTP/1.1 408") and '"request_timeout"' in answer

        async def two() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                first = asyncio.create_task(
                    http.post("/embed/text", json={"model": "student", "texts": ["a"]})
                )
                await asyncio.sleep(0.5)
                second = await http.post("/embed/text", json={"model": "student", "texts": ["b"]})
                health = await http.get("/health")
                return await first, second, health

        first, second, health = asyncio.run(two())
        assert first.status_code == 200 and health.status_code == 200
        err(second, 503, "overloaded")
        assert second.headers["retry-after"] == "1"
