"""Payload filters in Qdrant's JSON shape, validated once and translated for each store backend.

``{"must": [{"key": "lang", "match": {"value": "de"}}], "must_not": [...], "should": [...]}``;
a condition is ``match`` (``value``, ``any`` or ``except``), ``range`` (``gt``/``gte``/``lt``/
``lte``) or a nested filter. The embedded and the server store get the same semantics because
both are the Qdrant engine; only the Python classes differ.

Bounds, checked on the raw JSON before any model is built: at most ``MAX_FILTER_CONDITIONS``
conditions and nested filters in all and ``MAX_FILTER_DEPTH`` levels (the per-list limit
alone would allow 64^depth); keys are payload paths (``a``, ``a.b``, ``tags[]``, ``a[].b``);
values are valid Unicode, integers within 64 bits, ranges finite.
"""

from __future__ import annotations

from typing import Annotated, Any

import qdrant_edge as qe
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from qdrant_client import models as qm

from polyclip.service.validation import INT64, check_str

Int64 = Annotated[StrictInt, Field(ge=INT64[0], le=INT64[1])]
Text = Annotated[StrictStr, AfterValidator(check_str), Field(max_length=1024)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Scalar = Text | Int64 | StrictBool
MAX_CONDITIONS = 64  # per list
MAX_FILTER_CONDITIONS = 256  # in the whole filter
MAX_FILTER_DEPTH = 6  # nested filters inside filters
KEY_PATH = r"^[\w-]+(\[\])?(\.[\w-]+(\[\])?)*$"  # a, a.b, tags[], a[].b


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MatchSpec(_Spec):
    value: Scalar | None = None
    any: list[Text] | list[Int64] | None = Field(None, max_length=1024)
    except_: list[Text] | list[Int64] | None = Field(None, alias="except", max_length=1024)

    @model_validator(mode="after")
    def _one(self) -> MatchSpec:
        if sum(v is not None for v in (self.value, self.any, self.except_)) != 1:
            raise ValueError("match takes exactly one of value, any, except")
        return self


class RangeSpec(_Spec):
    gt: Finite | None = None
    gte: Finite | None = None
    lt: Finite | None = None
    lte: Finite | None = None

    @model_validator(mode="after")
    def _some(self) -> RangeSpec:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("range needs at least one of gt, gte, lt, lte")
        return self


class Condition(_Spec):
    key: str = Field(pattern=KEY_PATH, max_length=600, examples=["lang", "meta.tags[]"])
    match: MatchSpec | None = None
    range: RangeSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> Condition:
        if (self.match is None) == (self.range is None):
            raise ValueError("a condition takes exactly one of match, range")
        return self


class FilterSpec(_Spec):
    must: list[Condition | FilterSpec] | None = Field(None, max_length=MAX_CONDITIONS)
    should: list[Condition | FilterSpec] | None = Field(None, max_length=MAX_CONDITIONS)
    must_not: list[Condition | FilterSpec] | None = Field(None, max_length=MAX_CONDITIONS)


def check_filter_size(raw: Any) -> Any:
    """Count conditions and depth of a raw filter (before pydantic builds it), iteratively."""
    if raw is None:
        return raw
    count, stack = 0, [(raw, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(f"filter nests deeper than {MAX_FILTER_DEPTH} levels")
        for part in ("must", "should", "must_not"):
            items = node.get(part)
            if isinstance(items, list):
                count += len(items)
                if count > MAX_FILTER_CONDITIONS:
                    raise ValueError(f"filter has over {MAX_FILTER_CONDITIONS} conditions in all")
                stack.extend((item, depth + 1) for item in items)
    return raw


def with_lang(flt: FilterSpec | None, lang: str | None) -> FilterSpec | None:
    """Add ``payload.lang == lang`` to a filter (the search ``lang`` shortcut)."""
    if lang is None:
        return flt
    cond = Condition(key="lang", match=MatchSpec(value=lang))
    return FilterSpec(must=[cond] if flt is None else [cond, flt])


# ---- qdrant-edge ---------------------------------------------------------------------------
def to_edge(flt: FilterSpec) -> qe.Filter:
    def part(items: list[Condition | FilterSpec] | None) -> list[Any] | None:
        return None if items is None else [_edge_condition(c) for c in items]

    return qe.Filter(must=part(flt.must), should=part(flt.should), must_not=part(flt.must_not))


def _edge_condition(c: Condition | FilterSpec) -> Any:
    if isinstance(c, FilterSpec):
        return to_edge(c)
    if c.range is not None:
        r = c.range
        return qe.FieldCondition(c.key, range=qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt))
    m = c.match
    assert m is not None
    if m.any is not None:
        match: Any = qe.MatchAny(m.any)
    elif m.except_ is not None:
        match = qe.MatchExcept(m.except_)
    else:
        match = qe.MatchValue(m.value)  # type: ignore[arg-type]
    return qe.FieldCondition(c.key, match=match)


# ---- qdrant-client -------------------------------------------------------------------------
def to_client(flt: FilterSpec) -> qm.Filter:
    def part(items: list[Condition | FilterSpec] | None) -> list[Any] | None:
        return None if items is None else [_client_condition(c) for c in items]

    return qm.Filter(must=part(flt.must), should=part(flt.should), must_not=part(flt.must_not))


def _client_condition(c: Condition | FilterSpec) -> Any:
    if isinstance(c, FilterSpec):
        return to_client(c)
    if c.range is not None:
        r = c.range
        return qm.FieldCondition(key=c.key, range=qm.Range(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt))
    m = c.match
    assert m is not None
    if m.any is not None:
        match: Any = qm.MatchAny(any=m.any)
    elif m.except_ is not None:
        match = qm.MatchExcept(**{"except": m.except_})
    else:
        match = qm.MatchValue(value=m.value)  # type: ignore[arg-type]
    return qm.FieldCondition(key=c.key, match=match)
