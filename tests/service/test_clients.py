"""The clients teams use, against a live server: the ``openai`` SDK and ``qdrant-client``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from polyclip.encoders.load import load_encoders
from polyclip.service.config import Settings
from tests.live import live_server

TEXTS = ["a dog runs in the park", "ein hund läuft im park"]


def test_the_openai_sdk_embeds_and_raises_useful_errors(
    make_settings: Callable[..., Settings], model_dirs: dict
) -> None:
    student, _ = load_encoders(model_dirs["student-tiny"])
    want = student.encode(TEXTS)
    with live_server(make_settings(api_key="sk-test")) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-test", max_retries=0)
        floats = client.embeddings.create(model="student", input=TEXTS, encoding_format="float")
        got = np.array([d.embedding for d in floats.data])
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert floats.usage.prompt_tokens > 0 and floats.model == "student"
        # The SDK's default asks for base64 and decodes it itself.
        default = client.embeddings.create(model="student", input=TEXTS)
        np.testing.assert_allclose(np.array([d.embedding for d in default.data]), want, atol=1e-6)
        bits = client.embeddings.create(model="student", input=TEXTS, encoding_format="float",
                                        extra_body={"embedding_type": "binary"})  # fmt: skip
        packed = np.packbits(want > 0, axis=1).astype(np.int16) - 128  # sentence-transformers'
        assert [d.embedding for d in bits.data] == packed.tolist()
        short = client.embeddings.create(model="student", input=TEXTS[0], dimensions=8)
        assert len(short.data[0].embedding) == 8
        assert np.linalg.norm(short.data[0].embedding) == pytest.approx(1, abs=1e-5)
        with pytest.raises(openai.NotFoundError) as missing:
            client.embeddings.create(model="no-such-model", input="x")
        assert missing.value.status_code == 404 and "unknown model" in missing.value.message
        err = missing.value.body
        assert err["type"] == "invalid_request_error" and err["code"] == "model_not_found"
        assert err["param"] == "model" and err["request_id"]
        with pytest.raises(openai.UnprocessableEntityError) as bad:
            client.embeddings.create(model="student", input="x", dimensions=999)
        assert isinstance(bad.value, openai.APIStatusError) and "dimensions" in bad.value.message
        wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as denied:
            wrong.embeddings.create(model="student", input="x")
        assert "API key" in denied.value.message


READER = """
import json, sys
from qdrant_client import QdrantClient
client = QdrantClient(path=sys.argv[1])
points, _ = client.scroll(sys.argv[2], limit=100, with_vectors=True, with_payload=True)
info = client.get_collection(sys.argv[2])
seen = {str(p.id): {"payload": p.payload, "vectors": {k: len(v) for k, v in p.vector.items()}}
        for p in points}
print(json.dumps({"vectors": sorted(info.config.params.vectors), "points": seen}))
"""


def test_qdrant_client_reads_what_polyclip_wrote_in_another_process(
    make_settings: Callable[..., Settings], clip_space: str, tmp_path: Path
) -> None:
    """polyclip writes through its server path to qdrant-client's local files; a separate
    process opens them with QdrantClient(path=...): named vectors and payloads as written."""
    store = tmp_path / "qdrant-local"
    items = [{"id": 1, "text": "a dog", "payload": {"lang": "en", "tags": ["a", "b"]}},
             {"id": 2, "text": "ein hund", "payload": {"lang": "de", "n": 7}}]  # fmt: skip
    with live_server(make_settings(qdrant_path=store)) as base:
        r = httpx.post(
            f"{base}/collections", json={"name": "both", "model": ["teacher", "other-tiny"]}
        )
        assert r.status_code == 201, r.text
        vectors = sorted(s["vector"] for s in r.json()["spaces"])
        assert httpx.post(f"{base}/collections/both/points", json={"items": items}).is_success
    done = subprocess.run([sys.executable, "-c", READER, str(store), "both"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["vectors"] == vectors and clip_space.replace("@", "_") in vectors
    assert seen["points"]["1"]["payload"] == items[0]["payload"]
    assert seen["points"]["2"]["payload"] == items[1]["payload"]
    assert seen["points"]["1"]["vectors"] == {v: (16 if "clip" in v else 8) for v in vectors}
