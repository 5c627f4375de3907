"""What each output embedding type costs: retrieval quality and bytes on the wire, over HTTP.

Documents are the English side of a line-aligned corpus embedded by the index model (the
teacher), queries each other language embedded by the query model (the student), both fetched
from ``/v1/embeddings`` in every ``embedding_type``; query ``i`` has document ``i`` as its gold
answer. Scored here with numpy (exact search, so only the types are compared):

- **quantised queries, float documents** (binary/ubinary only): the bits as ±1 dotted with the
  float documents (asymmetric search). int8/uint8 codes carry per-dimension offsets and scales
  that only the model's calibration undoes, which a client does not have: not scored;
- **both quantised**: code · code for int8/uint8 (the dot product an index of those codes
  computes), agreeing bits (Hamming similarity) for binary/ubinary;
- each **± rescoring**: the top ``RESCORE`` candidates re-ranked by float query · float
  documents, as a store does that keeps the float vectors on disk.

Bytes are the response body per text, JSON (``encoding_format=float``) and base64.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import numpy as np

from polyclip.bench.client import BenchError, new_client, server_message, transport_error
from polyclip.encoders.metrics import ranking_metrics

TYPES = ("float", "int8", "uint8", "binary", "ubinary")
DTYPES = {"float": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8,
          "ubinary": np.uint8}  # fmt: skip
RESCORE = 100
BATCH = 64


@dataclass(frozen=True)
class TypesConfig:
    url: str
    data: dict[str, list[str]]  # "en" plus query languages, line-aligned
    index_model: str = "teacher"
    query_model: str = "student"
    api_key: str | None = None
    timeout_s: float = 60.0


async def _embed(
    client: httpx.AsyncClient, model: str, texts: list[str], prefix: str, kind: str, fmt: str
) -> tuple[np.ndarray, int]:
    """Rows of ``texts`` in type ``kind`` (decoded from JSON or base64) and the body bytes."""
    rows, size = [], 0
    for start in range(0, len(texts), BATCH):
        body = {"model": model, "input": texts[start : start + BATCH], "prefix": prefix,
                "embedding_type": kind, "encoding_format": fmt}  # fmt: skip
        try:
            response = await client.post("/v1/embeddings", json=body)
        except httpx.TransportError as e:
            raise transport_error(str(client.base_url), e) from e
        if response.status_code != 200:
            raise BenchError(f"/v1/embeddings ({kind}) answered {response.status_code}: "
                             f"{server_message(response)}")  # fmt: skip
        size += len(response.content)
        for item in response.json()["data"]:
            value = item["embedding"]
            if fmt == "base64":
                rows.append(np.frombuffer(base64.b64decode(value), dtype=DTYPES[kind]))
            else:
                rows.append(np.asarray(value, dtype=DTYPES[kind]))
    return np.stack(rows), size


def as_vectors(rows: np.ndarray, kind: str, dimension: int) -> np.ndarray:
    """Rows as float vectors whose dot products are what an index of that type computes."""
    if kind in ("binary", "ubinary"):
        codes = rows.astype(np.int16) + (128 if kind == "binary" else 0)
        bits = np.unpackbits(codes.astype(np.uint8), axis=1)[:, :dimension]
        return bits.astype(np.float32) * 2 - 1  # ±1: dot = D − 2·Hamming
    return rows.astype(np.float32)


def ranks(scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rank (0 = first) of the gold document i for each query row i; ties (frequent with
    Hamming scores) broken at random, so they neither help nor hurt the gold on average."""
    gold = scores[np.arange(len(scores)), np.arange(len(scores))]
    above = (scores > gold[:, None]).sum(axis=1)
    tied = (scores == gold[:, None]).sum(axis=1) - 1
    return above + np.random.default_rng(seed).integers(0, tied + 1)


def rescored(scores: np.ndarray, exact: np.ndarray, k: int = RESCORE) -> np.ndarray:
    """Ranks after re-ranking each query's top ``k`` by the exact (float) scores."""
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    out = np.full(len(scores), k, dtype=np.int64)  # gold outside the candidates: a miss
    for i, cand in enumerate(top):
        if i in cand:
            out[i] = int((exact[i, cand] > exact[i, i]).sum())
    return out


def _metrics(rank: np.ndarray) -> dict[str, float]:
    return {k: round(v, 2) for k, v in ranking_metrics(rank).items()}


async def run_types(cfg: TypesConfig) -> dict[str, Any]:
    langs = [lang for lang in cfg.data if lang != "en"]
    n = len(cfg.data["en"])
    async with new_client(
        cfg.url, api_key=cfg.api_key, connections=1, timeout=cfg.timeout_s
    ) as client:
        docs, queries, size = {}, {}, {}
        for kind in TYPES:
            docs[kind], size[(kind, "float")] = await _embed(
                client, cfg.index_model, cfg.data["en"], "passage", kind, "float"
            )
            _, size[(kind, "base64")] = await _embed(
                client, cfg.index_model, cfg.data["en"], "passage", kind, "base64"
            )
            for lang in langs:
                queries[(kind, lang)], _ = await _embed(
                    client, cfg.query_model, cfg.data[lang], "query", kind, "float"
                )
    rows = []
    float_docs = docs["float"]
    dim = float_docs.shape[1]
    for kind in TYPES:
        q_docs = as_vectors(docs[kind], kind, dim)
        row: dict[str, Any] = {
            "type": kind,
            "dimension_bytes": int(docs[kind].shape[1] * docs[kind].itemsize),
            "json_bytes_per_text": round(size[(kind, "float")] / n, 1),
            "base64_bytes_per_text": round(size[(kind, "base64")] / n, 1),
            "langs": {},
        }
        for lang in langs:
            exact = queries[("float", lang)] @ float_docs.T
            q = as_vectors(queries[(kind, lang)], kind, dim)
            both = q @ q_docs.T
            scored: dict[str, dict[str, float] | None] = {
                "queries_quantised": None,
                "queries_quantised_rescored": None,
                "both_quantised": _metrics(ranks(both)),
                "both_quantised_rescored": _metrics(rescored(both, exact)),
            }
            if kind in ("float", "binary", "ubinary"):
                asym = q @ float_docs.T
                scored["queries_quantised"] = _metrics(ranks(asym))
                scored["queries_quantised_rescored"] = _metrics(rescored(asym, exact))
            row["langs"][lang] = scored
        row["mean_r@1"] = {
            setting: None if scored[setting] is None else round(float(np.mean(
                [v[setting]["r@1"] for v in row["langs"].values()])), 2)
            for setting in scored
        }  # fmt: skip
        rows.append(row)
    return {
        "kind": "types",
        "config": {
            **asdict(cfg),
            "data": {k: len(v) for k, v in cfg.data.items()},
            "api_key": "***" if cfg.api_key else None,
        },
        "rescore_candidates": RESCORE,
        "rows": rows,
    }
