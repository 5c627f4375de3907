"""Embedding routes: OpenAI's ``/v1/embeddings``, and polyclip's ``/embed/text|image``."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from polyclip.encoders.embedding_types import quantize, truncate
from polyclip.encoders.errors import EncoderError
from polyclip.service.core import Service
from polyclip.service.deps import Svc
from polyclip.service.domain import BadInput, TooLarge, UnsupportedMedia
from polyclip.service.registry import ServedModel
from polyclip.service.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedResponse,
    ImageEmbedRequest,
    ModelList,
    TextEmbedRequest,
)
from polyclip.service.security import bearer

router = APIRouter(dependencies=[Depends(bearer)], tags=["embeddings"])
TRUNCATED_HEADER = "X-Polyclip-Truncated"  # indices of inputs cut at the model's max tokens


@router.get("/v1/models", response_model=ModelList)
async def list_models(svc: Svc) -> ModelList:
    """Every model and alias, with its embedding space (OpenAI's list, extended)."""
    return ModelList.model_validate({"data": svc.registry.describe()})


class NumpyJSON(Response):
    """JSON written by orjson straight from numpy rows: no copy into Python floats and no
    validation against the response model (whose schema stays documented in OpenAPI)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _fast(content: dict[str, Any], truncated: list[int]) -> NumpyJSON:
    headers = {TRUNCATED_HEADER: ",".join(map(str, truncated))} if truncated else None
    return NumpyJSON(content, headers=headers)


def _typed(model: ServedModel, rows: np.ndarray, kind: str, field: str) -> np.ndarray:
    """Rows in the requested output type (after ``dimensions``)."""
    try:
        return quantize(rows, kind, model.calibration)  # type: ignore[arg-type]
    except EncoderError as e:
        raise BadInput("no_calibration", str(e), field=field) from e


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
async def openai_embeddings(body: EmbeddingsRequest, svc: Svc) -> NumpyJSON:
    """OpenAI-compatible: ``dimensions`` keeps the first d values and re-normalises;
    ``embedding_type`` then quantises (int8, uint8, binary, ubinary)."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise BadInput("invalid_request", "input is an empty list", field="input")
    svc.check_count(len(texts), "input")
    model = svc.model(body.model)
    if body.dimensions is not None and body.dimensions > model.dimension:
        raise BadInput(
            "invalid_dimensions",
            f"dimensions {body.dimensions} is over the model's {model.dimension}",
            field="dimensions",
        )
    fields = (
        ["input"] if isinstance(body.input, str) else [f"input[{i}]" for i in range(len(texts))]
    )
    out = await svc.embed_texts(model, texts, body.prefix, fields)
    rows = _typed(model, truncate(out.rows, body.dimensions), body.embedding_type, "embedding_type")
    if body.encoding_format == "base64":  # the raw bytes: float32 little-endian, or int bytes
        raw = rows.astype("<f4") if rows.dtype == np.float32 else rows
        values: list[Any] = [base64.b64encode(r.tobytes()).decode("ascii") for r in raw]
    else:
        values = list(rows)  # numpy rows: orjson writes them as arrays
    tokens = sum(out.tokens)
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    content = {"object": "list", "data": data, "model": body.model, "usage": usage}
    return _fast(content, out.truncated)


@router.post("/embed/text", response_model=EmbedResponse)
async def embed_text(body: TextEmbedRequest, svc: Svc) -> NumpyJSON:
    """Unit vectors for texts, with the model's query/passage prefix when asked."""
    svc.check_count(len(body.texts), "texts")
    model = svc.model(body.model)
    fields = [f"texts[{i}]" for i in range(len(body.texts))]
    out = await svc.embed_texts(model, body.texts, body.prefix, fields, truncate=body.truncate)
    rows = _typed(model, out.rows, body.embedding_type, "embedding_type")
    tokens = sum(out.tokens)
    content = {
        "model": body.model,
        "space": model.space,
        "dimension": model.dimension,
        "embedding_type": body.embedding_type,
        "embeddings": rows,
        "truncated": out.truncated,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _fast(content, out.truncated)


_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ImageEmbedRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "images"],
                    "properties": {
                        "model": {"type": "string", "minLength": 1},
                        "images": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                        },
                    },
                }
            },
        },
    }
}


@router.post("/embed/image", response_model=EmbedResponse, openapi_extra=_IMAGE_BODY)
async def embed_image(request: Request, svc: Svc) -> NumpyJSON:
    """Images as multipart uploads (field ``images``, repeated) or JSON base64/data URIs."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        model_ref, refs = await _read_multipart(request, svc)
    elif ctype in ("application/json", ""):
        try:  # Python's parser, as FastAPI's: a lone-surrogate escape is the field's problem
            body = ImageEmbedRequest.model_validate(json.loads(await request.body()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInput("invalid_json", "the body is not valid JSON") from e
        except ValidationError as e:
            raise RequestValidationError(e.errors(include_url=False)) from e
        model_ref, refs = body.model, list[str | bytes]()
        refs.extend(body.images)
    else:
        raise UnsupportedMedia(
            "unsupported_media_type", "send application/json or multipart/form-data"
        )
    svc.check_count(len(refs), "images")
    model = svc.model(model_ref)
    svc.require_images(model, "model")  # before a single image is decoded
    images = await svc.decode_images(refs, [f"images[{i}]" for i in range(len(refs))])
    rows = await svc.embed_images(model, images, "model")
    content = {"model": model_ref, "space": model.space, "dimension": model.dimension,
               "embedding_type": "float", "embeddings": rows, "truncated": []}  # fmt: skip
    return _fast(content, [])


async def _read_multipart(request: Request, svc: Service) -> tuple[str, list[str | bytes]]:
    limit = svc.limits.max_items
    form = await request.form(max_files=limit, max_fields=limit + 8)
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise BadInput("invalid_request", "form field `model` is required", field="model")
    refs: list[str | bytes] = []
    for i, part in enumerate(form.getlist("images")):
        if isinstance(part, UploadFile):
            data = await part.read(svc.limits.max_image_bytes + 1)
            if len(data) > svc.limits.max_image_bytes:
                raise TooLarge(
                    "image_too_large",
                    f"upload is over the limit of {svc.limits.max_image_bytes} bytes",
                    field=f"images[{i}]",
                )
            refs.append(data)
        else:
            refs.append(part)  # a text part: base64 or a data URI, as in JSON
    if not refs:
        raise BadInput("invalid_request", "form field `images` is required", field="images")
    return model, refs
