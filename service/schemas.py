"""Request and response bodies: the OpenAPI schema that clients, docs and the fuzzer all read.

Static bounds live here, where the schema shows them; configurable limits (items per request,
characters per text, image bytes) are checked by the service core and answered with 413.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from polyclip.encoders.embedding_types import EmbeddingType
from polyclip.service.filters import FilterSpec, check_filter_size
from polyclip.service.store import COLLECTION_NAME, Quantization
from polyclip.service.validation import SafeStr

Prefix = Literal["query", "passage"]
ModelRef = Annotated[SafeStr, Field(min_length=1, max_length=256, examples=["teacher"])]
PointIdIn = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | UUID
PointIdOut = int | str
MAX_LIMIT = 1000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


# ---- embeddings ------------------------------------------------------------------------------
class EmbeddingsRequest(BaseModel):
    """OpenAI's body; ``prefix`` is polyclip's extension for e5-style query/passage models."""

    model_config = ConfigDict(extra="ignore")  # OpenAI SDKs send fields we do not use

    input: SafeStr | list[SafeStr]
    model: ModelRef
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    prefix: Prefix | None = None
    embedding_type: EmbeddingType = Field(
        "float",
        description="float, or quantised after `dimensions`: int8/uint8 (one byte a dimension, "
        "the model's calibration ranges), binary/ubinary (sign bits packed 8 to a byte)",
    )
    user: SafeStr | None = Field(None, max_length=256)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    # floats, or ints for the quantised types; with encoding_format=base64, the raw bytes
    # (little-endian float32, or one byte per int8/uint8 value or per 8 bits)
    embedding: list[float] | list[int] | str


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class TextEmbedRequest(_In):
    model: ModelRef
    texts: list[SafeStr] = Field(min_length=1, examples=[["a dog runs in the park"]])
    prefix: Prefix | None = None
    truncate: bool = True  # false: a text over the model's token limit is a 422
    embedding_type: EmbeddingType = "float"


class ImageEmbedRequest(_In):
    model: ModelRef
    images: list[SafeStr] = Field(min_length=1)  # base64, data URIs, or URLs when enabled


class EmbedResponse(BaseModel):
    model: str
    space: str
    dimension: int
    embedding_type: EmbeddingType = "float"
    embeddings: list[list[float]] | list[list[int]]
    truncated: list[int] = Field(default_factory=list)  # inputs cut at the model's max tokens
    usage: Usage | None = None


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str
    kind: Literal["text", "dual"]
    backend: str
    space: str
    dimension: int
    max_seq_length: int
    prefixes: dict[str, str]
    device: str
    alias_of: str | None = None
    # per evaluation set (e.g. "multi30k/val"): R@1 per language as a share of the base model's
    # own-space R@1, distilled and never-distilled languages marked (students only)
    retention: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


# ---- collections -----------------------------------------------------------------------------
class CreateCollectionRequest(_In):
    name: str = Field(pattern=COLLECTION_NAME, examples=["docs"])
    model: ModelRef | Annotated[list[ModelRef], Field(min_length=1, max_length=8)] = Field(
        description="the index model; a list indexes every point in each model's space"
    )
    quantization: Quantization = Field(
        "none",
        description="Qdrant's quantisation of the vectors: int8 (4x less RAM) or binary (32x); "
        "the float vectors stay on disk for rescoring",
    )


class SpaceOut(BaseModel):
    space: str
    vector: str
    dimension: int
    model: str


class CollectionOut(BaseModel):
    name: str
    store: str
    quantization: Quantization
    spaces: list[SpaceOut]
    points_count: int
    indexed_vectors_count: int  # per named vector, in indexed (and quantised) segments; rest: exact
    created: str


class CollectionList(BaseModel):
    collections: list[str]


class PointIn(_In):
    id: PointIdIn | None = None  # an unsigned int or a UUID; a UUID is made when absent
    text: SafeStr | None = None
    image: SafeStr | None = None  # base64, data URI, or URL when enabled
    payload: dict[str, Any] | None = None  # bounded by limits.max_payload_* (checked by the core)

    @model_validator(mode="after")
    def _one_input(self) -> PointIn:
        if (self.text is None) == (self.image is None):
            raise ValueError("each item takes exactly one of text, image")
        return self


class UpsertRequest(_In):
    model: ModelRef | None = None  # default: the collection's index model(s)
    items: list[PointIn] = Field(min_length=1)


class UpsertResponse(BaseModel):
    collection: str
    ids: list[PointIdOut]
    count: int
    truncated: list[int] = Field(default_factory=list)


class DeletePointsRequest(_In):
    ids: list[PointIdIn] | None = Field(None, min_length=1)
    filter: FilterSpec | None = None

    bounded_filter = field_validator("filter", mode="before")(check_filter_size)

    @model_validator(mode="after")
    def _one_selector(self) -> DeletePointsRequest:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of ids, filter")
        return self


class DeletePointsResponse(BaseModel):
    collection: str
    deleted: int


class QueryIn(_In):
    text: SafeStr | None = None
    image: SafeStr | None = None

    @model_validator(mode="after")
    def _one_input(self) -> QueryIn:
        if (self.text is None) == (self.image is None):
            raise ValueError("a query takes exactly one of text, image")
        return self


class QuantizationIn(_In):
    """How to search a quantised collection (ignored by others)."""

    rescore: bool = Field(True, description="re-score the candidates with the float vectors")
    oversampling: float | None = Field(
        None, ge=1.0, le=16.0, description="fetch oversampling × limit candidates first"
    )
    ignore: bool = Field(False, description="search the float vectors only")


class SearchRequest(_In):
    query: QueryIn
    model: ModelRef | None = None  # default: the collection's first index model
    limit: int = Field(10, ge=1, le=MAX_LIMIT)
    filter: FilterSpec | None = None
    lang: SafeStr | None = Field(None, max_length=64)  # shortcut for payload.lang == lang
    shadow: ModelRef | None = Field(
        None, description="also search with this model and report overlap@k with it"
    )
    quantization: QuantizationIn | None = None

    bounded_filter = field_validator("filter", mode="before")(check_filter_size)


class HitOut(BaseModel):
    id: PointIdOut
    score: float
    payload: dict[str, Any]


class ShadowOut(BaseModel):
    model: str
    space: str
    overlap: float  # |top-k ∩ shadow top-k| / k
    k: int
    results: list[HitOut]


class SearchResponse(BaseModel):
    collection: str
    model: str
    space: str
    results: list[HitOut]
    shadow: ShadowOut | None = None


# ---- admin -----------------------------------------------------------------------------------
class AliasRequest(_In):
    target: ModelRef


class AliasTable(BaseModel):
    models: list[str]
    aliases: dict[str, str]
    loaded: list[str] = Field(default_factory=list)  # models (re)loaded by this call
    removed: list[str] = Field(default_factory=list)


class ErrorDetail(BaseModel):
    message: str
    type: str  # OpenAI's class: invalid_request_error, authentication_error, server_error, ...
    param: str | None = None  # OpenAI's name for the offending input (= field)
    code: str
    field: str | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERRORS = {
    400: "malformed JSON or form",
    401: "missing or wrong API key",
    404: "unknown model, collection or route",
    409: "the collection exists already",
    413: "over a size limit (body, items, characters, image bytes or pixels)",
    422: "invalid input, or a model whose space the collection does not hold",
    429: "the model's queue is full; retry after `Retry-After` seconds",
    503: "not ready, shutting down, or the store is unreachable",
    504: "the model did not answer within the request timeout",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why} for code, why in _ERRORS.items()
}
