"""Checks on values a client wrote that the store or the tokenizer cannot hold.

Every check walks iteratively (no recursion a deep input could exhaust) and stops at the first
problem, naming the field. Strings must be valid Unicode (no lone surrogates, which JSON's
``\\ud800`` escapes can smuggle in and Rust-side tokenizers and the store reject); numbers must be
finite, integers within 64 bits; payloads are bounded in depth, keys and size, because the store
keeps them as they are: Qdrant's engine stops decoding at a nesting depth of 128, after which a
collection holding such a point can neither be searched nor reopened.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator

from polyclip.service.domain import BadInput, TooLarge

INT64 = (-(2**63), 2**63 - 1)


def check_str(value: str) -> str:
    """Valid Unicode only: a lone surrogate cannot be encoded as UTF-8 anywhere downstream."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: a lone surrogate at position {e.start}") from None
    return value


SafeStr = Annotated[str, AfterValidator(check_str)]


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if INT64[0] <= value <= INT64[1] else "an integer beyond 64 bits"
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else "NaN or Infinity"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a string with a lone surrogate (not valid Unicode)"
        return None
    return f"a value of type {type(value).__name__}"


def check_payload(
    payload: dict[str, Any], field: str, *, max_depth: int, max_keys: int, max_bytes: int
) -> None:
    """Refuse what the store cannot hold, before anything is embedded or written."""
    keys = 0
    stack: list[tuple[str, Any, int]] = [(field, payload, 1)]
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise BadInput(
                    "payload_too_deep",
                    f"payload nests deeper than {max_depth} levels",
                    field=where,
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    keys += 1
                    if _scalar_problem(key):
                        raise BadInput("invalid_payload", "a key is not valid Unicode", field=where)
                    child = f"{where}.{key}"
                else:
                    child = f"{where}[{key}]"
                stack.append((child, item, depth + 1))
            if keys > max_keys:
                raise TooLarge(
                    "payload_too_large", f"payload has over {max_keys} keys", field=field
                )
        elif (problem := _scalar_problem(value)) is not None:
            raise BadInput("invalid_payload", f"the store cannot hold {problem}", field=where)
    size = len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise TooLarge(
            "payload_too_large",
            f"payload is {size} bytes as JSON, over the limit of {max_bytes}",
            field=field,
        )
