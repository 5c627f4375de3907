"""Embedding routes: OpenAI's ``/v1/embeddings``, and polyclip's ``/embed/text|image``."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from polyclip.encoders.base import l2_normalize
from polyclip.service.core import Service
from polyclip.service.deps import Svc
from polyclip.service.domain import BadInput, TooLarge, UnsupportedMedia
from polyclip.service.schemas import (
    EmbeddingData,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedResponse,
    ImageEmbedRequest,
    ModelList,
    TextEmbedRequest,
    Usage,
)
from polyclip.service.security import bearer

router = APIRouter(dependencies=[Depends(bearer)], tags=["embeddings"])
TRUNCATED_HEADER = "X-Polyclip-Truncated"  # indices of inputs cut at the model's max tokens


def _mark_truncated(response: Response, truncated: list[int]) -> None:
    if truncated:
        response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))


@router.get("/v1/models", response_model=ModelList)
async def list_models(svc: Svc) -> ModelList:
    """Every model and alias, with its embedding space (OpenAI's list, extended)."""
    return ModelList.model_validate({"data": svc.registry.describe()})


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
async def openai_embeddings(
    body: EmbeddingsRequest, response: Response, svc: Svc
) -> EmbeddingsResponse:
    """OpenAI-compatible: ``dimensions`` keeps the first d values and re-normalises."""
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
    rows = out.rows if body.dimensions is None else l2_normalize(out.rows[:, : body.dimensions])
    _mark_truncated(response, out.truncated)
    data = [
        EmbeddingData(index=i, embedding=_encode(row, body.encoding_format))
        for i, row in enumerate(rows)
    ]
    tokens = sum(out.tokens)
    return EmbeddingsResponse(
        data=data, model=body.model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )


def _encode(row: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # what the OpenAI SDKs decode: little-endian float32
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


@router.post("/embed/text", response_model=EmbedResponse)
async def embed_text(body: TextEmbedRequest, response: Response, svc: Svc) -> EmbedResponse:
    """Unit vectors for texts, with the model's query/passage prefix when asked."""
    svc.check_count(len(body.texts), "texts")
    model = svc.model(body.model)
    fields = [f"texts[{i}]" for i in range(len(body.texts))]
    out = await svc.embed_texts(model, body.texts, body.prefix, fields, truncate=body.truncate)
    _mark_truncated(response, out.truncated)
    tokens = sum(out.tokens)
    return EmbedResponse(
        model=body.model,
        space=model.space,
        dimension=model.dimension,
        embeddings=out.rows.tolist(),
        truncated=out.truncated,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
    )


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
async def embed_image(request: Request, svc: Svc) -> EmbedResponse:
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
    return EmbedResponse(
        model=model_ref, space=model.space, dimension=model.dimension, embeddings=rows.tolist()
    )


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
