"""Payload filters in Qdrant's JSON shape, validated once and translated for each store backend.

``{"must": [{"key": "lang", "match": {"value": "de"}}], "must_not": [...], "should": [...]}``;
a condition is ``match`` (``value``, ``any`` or ``except``), ``range`` (``gt``/``gte``/``lt``/
``lte``) or a nested filter. The embedded and the server store get the same semantics because
both are the Qdrant engine; only the Python classes differ.
"""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator
from qdrant_client import models as qm

Scalar = StrictStr | StrictInt | StrictBool
MAX_CONDITIONS = 64


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MatchSpec(_Spec):
    value: Scalar | None = None
    any: list[StrictStr] | list[StrictInt] | None = Field(None, max_length=1024)
    except_: list[StrictStr] | list[StrictInt] | None = Field(None, alias="except", max_length=1024)

    @model_validator(mode="after")
    def _one(self) -> MatchSpec:
        if sum(v is not None for v in (self.value, self.any, self.except_)) != 1:
            raise ValueError("match takes exactly one of value, any, except")
        return self


class RangeSpec(_Spec):
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _some(self) -> RangeSpec:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("range needs at least one of gt, gte, lt, lte")
        return self


class Condition(_Spec):
    key: str = Field(min_length=1, max_length=256)
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
