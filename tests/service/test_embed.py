"""Embedding routes against the real app and real tiny models: values equal the encoders'."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from polyclip.encoders.load import load_encoders
from polyclip.export.bundle import ExportOptions, export_bundle
from polyclip.service.app import create_app
from polyclip.service.config import Settings
from polyclip.training.retention import write_card_retention
from tests.images import b64, png_bytes
from tests.live import local_client
from tests.tiny import save_student

TEXTS = ["a dog runs in the park", "ein hund läuft", "un chat"]


def direct(path: Path, texts: list[str], prefix: str | None = None) -> np.ndarray:
    enc, _ = load_encoders(path)
    return enc.encode(texts, prefix=prefix)  # type: ignore[arg-type]


def test_openai_embeddings_match_the_encoder(client: TestClient, model_dirs: dict) -> None:
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "student"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "student"
    got = np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])
    np.testing.assert_allclose(got, direct(model_dirs["student-tiny"], TEXTS), atol=1e-5)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(TEXTS)


def test_openai_single_string_base64_and_dimensions(client: TestClient, model_dirs: dict) -> None:
    r = client.post(
        "/v1/embeddings",
        json={"input": TEXTS[0], "model": "teacher", "encoding_format": "base64", "dimensions": 8},
    )
    assert r.status_code == 200, r.text
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    full = direct(model_dirs["clip-tiny"], TEXTS[:1])[0, :8]
    np.testing.assert_allclose(vec, full / np.linalg.norm(full), atol=1e-5)
    too_many = client.post(
        "/v1/embeddings", json={"input": "x", "model": "teacher", "dimensions": 99}
    )
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "dimensions"


def test_embed_text_applies_the_prefix(
    client: TestClient, model_dirs: dict, clip_space: str
) -> None:
    r = client.post("/embed/text", json={"model": "student", "texts": TEXTS, "prefix": "query"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["space"], body["dimension"], body["truncated"]) == (clip_space, 16, [])
    want = direct(model_dirs["student-tiny"], TEXTS, prefix="query")
    np.testing.assert_allclose(np.array(body["embeddings"]), want, atol=1e-5)
    assert not np.allclose(want, direct(model_dirs["student-tiny"], TEXTS))


def test_long_texts_are_truncated_and_said_so(client: TestClient) -> None:
    long = "a dog runs " * 40  # far over the tiny student's 32 tokens
    r = client.post("/embed/text", json={"model": "student", "texts": ["short", long]})
    assert r.status_code == 200 and r.json()["truncated"] == [1]
    assert r.headers["x-polyclip-truncated"] == "1"
    r = client.post("/v1/embeddings", json={"model": "student", "input": [long]})
    assert r.headers["x-polyclip-truncated"] == "0"
    r = client.post("/embed/text", json={"model": "student", "texts": [long], "truncate": False})
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "text_too_long",
        "message": r.json()["error"]["message"],
        "field": "texts[0]",
        "param": "texts[0]",  # OpenAI's name for the field
        "type": "invalid_request_error",
        "request_id": r.headers["x-request-id"],
    }


def test_embed_image_json_data_uri_and_multipart_agree(
    client: TestClient, model_dirs: dict
) -> None:
    png = png_bytes()
    _, image_enc = load_encoders(model_dirs["clip-tiny"])
    assert image_enc is not None
    want = image_enc.encode([png])[0]
    raw = client.post("/embed/image", json={"model": "teacher", "images": [b64(png)]})
    uri = client.post(
        "/embed/image", json={"model": "teacher", "images": ["data:image/png;base64," + b64(png)]}
    )
    form = client.post(
        "/embed/image",
        data={"model": "teacher"},
        files=[("images", ("a.png", png, "image/png")), ("images", ("b.png", png, "image/png"))],
    )
    for r, n in ((raw, 1), (uri, 1), (form, 2)):
        assert r.status_code == 200, r.text
        assert len(r.json()["embeddings"]) == n
        np.testing.assert_allclose(r.json()["embeddings"][0], want, atol=1e-5)


def test_image_text_and_student_share_the_teacher_space(
    client: TestClient, clip_space: str
) -> None:
    """The contract the whole project rests on, as the API reports it."""
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["teacher"]["alias_of"] == "clip-tiny" and models["teacher"]["kind"] == "dual"
    assert models["student"]["space"] == models["teacher"]["space"] == clip_space
    assert models["other-tiny"]["space"] == "other"
    assert models["student-tiny"]["prefixes"] == {"query": "query: ", "passage": "passage: "}


def test_text_only_model_refuses_images(client: TestClient) -> None:
    r = client.post("/embed/image", json={"model": "student", "images": [b64(png_bytes())]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_image_tower"


@pytest.mark.parametrize("route", ["/health", "/ready", "/metrics", "/docs", "/openapi.json"])
def test_ops_routes(client: TestClient, route: str) -> None:
    assert client.get(route).status_code == 200


def test_metrics_have_tei_names(client: TestClient) -> None:
    client.post("/embed/text", json={"model": "student", "texts": TEXTS})
    text = client.get("/metrics").text
    for name in (
        "te_request_count_total",
        "te_request_duration_bucket",
        "te_queue_size",
        "te_batch_next_size_bucket",
        "te_batch_next_tokens_bucket",
        "te_request_tokenization_duration_bucket",
        "te_batch_inference_duration_bucket",
        "te_request_queue_duration_bucket",
    ):
        assert name in text, name
    assert 'route="/embed/text"' in text and 'model="student-tiny"' in text


def test_resident_memory_is_split_into_anonymous_and_file_backed(client: TestClient) -> None:
    """A leak is anonymous memory; mapped files (weights, the store's WAL) are not: the soak
    needs the two apart, and together they are the process's resident memory."""
    series = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith(("te_process_resident_memory_split_bytes", "process_resident"))
    }
    anon = series['te_process_resident_memory_split_bytes{kind="anon"}']
    file = series['te_process_resident_memory_split_bytes{kind="file"}']
    shmem = series['te_process_resident_memory_split_bytes{kind="shmem"}']
    assert anon > 0 and file > 0
    assert anon + file + shmem == pytest.approx(series["process_resident_memory_bytes"], rel=0.05)


def test_models_list_shows_each_students_retention(
    make_settings: Callable[..., Settings], xlmr_dir: Path, clip_space: str, tmp_path: Path
) -> None:
    """Retention recorded by train/eval travels: card → bundle.json → /v1/models."""
    table = {"metric": "r@1 ratio", "languages": {"cs": {"distilled": False, "retention": 0.9}}}
    student = save_student(xlmr_dir, tmp_path / "student", space=clip_space)
    assert write_card_retention(student, "multi30k/val", table)
    export_bundle(student, tmp_path / "bundle", ExportOptions())
    bundle_meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle_meta["card"]["retention"] == {"multi30k/val": table}
    extra = {"kept": {"path": str(student)}, "kept-onnx": {"path": str(tmp_path / "bundle")}}
    with local_client(create_app(make_settings(models=extra))) as api:
        listed = {m["id"]: m for m in api.get("/v1/models").json()["data"]}
    assert (
        listed["kept"]["retention"] == listed["kept-onnx"]["retention"] == {"multi30k/val": table}
    )
    assert listed["teacher"]["retention"] is None


def test_output_embedding_types(client: TestClient) -> None:
    """binary/ubinary need nothing; int8/uint8 need the model's calibration ranges; all are
    sentence-transformers' quantize_embeddings of the float rows, after ``dimensions``."""
    from sentence_transformers.util.quantization import quantize_embeddings

    body = {"model": "teacher", "input": TEXTS, "dimensions": 12}
    floats = np.array([d["embedding"] for d in client.post("/v1/embeddings", json=body).json()[
        "data"]], dtype=np.float32)  # fmt: skip
    for kind in ("binary", "ubinary"):
        r = client.post("/v1/embeddings", json={**body, "embedding_type": kind})
        got = np.array([d["embedding"] for d in r.json()["data"]])
        want = quantize_embeddings(floats, precision=kind)
        assert got.shape == (3, 2) and np.array_equal(got, want)
        r = client.post("/v1/embeddings", json={**body, "embedding_type": kind,
                                                "encoding_format": "base64"})  # fmt: skip
        raw = base64.b64decode(r.json()["data"][0]["embedding"])
        assert np.array_equal(np.frombuffer(raw, dtype=want.dtype), want[0])
    r = client.post("/v1/embeddings", json={**body, "embedding_type": "int8"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_calibration"


def test_calibrated_int8_and_uint8(make_settings: Callable[..., Settings], clip_dir: Path,
                                   tmp_path: Path, model_dirs: dict) -> None:  # fmt: skip
    from sentence_transformers.util.quantization import quantize_embeddings

    from polyclip.__main__ import main
    from tests.captions import write_aligned

    model = shutil.copytree(clip_dir, tmp_path / "clip")
    data = write_aligned(tmp_path / "data", {"train": (40, 0)})
    argv = ["models", "calibrate", str(model), "--data", str(data), "--langs", "de,fr",
            "--texts", "50"]  # fmt: skip
    assert main(argv) == 0
    calibration = np.load(model / "calibration.npy")
    assert calibration.shape == (50, 16) and calibration.dtype == np.float16
    extra = {"cal": {"path": str(model)}}
    with local_client(create_app(make_settings(models=extra))) as c:
        texts = {"model": "cal", "texts": TEXTS}
        floats = np.array(c.post("/embed/text", json=texts).json()["embeddings"], np.float32)
        for kind in ("int8", "uint8"):
            r = c.post("/embed/text", json={**texts, "embedding_type": kind})
            assert r.json()["embedding_type"] == kind
            want = quantize_embeddings(
                floats, precision=kind, calibration_embeddings=calibration.astype(np.float32)
            )
            assert np.array_equal(np.array(r.json()["embeddings"]), want)  # fmt: skip
    # A student takes its teacher's ranges (int8 codes comparable with the teacher's index);
    # a model of another space may not.
    student = shutil.copytree(model_dirs["student-tiny"], tmp_path / "student")
    assert main(["models", "calibrate", str(student), "--like", str(model)]) == 0
    assert np.array_equal(np.load(student / "calibration.npy"), calibration)
    other = shutil.copytree(model_dirs["other-tiny"], tmp_path / "other")
    assert main(["models", "calibrate", str(other), "--like", str(model)]) == 2
    assert not (other / "calibration.npy").exists()
