"""Schemathesis fuzzing against the OpenAPI schema of a live server: no input gives a 5xx,
and every documented response matches its schema (errors included).

``POLYCLIP_FUZZ_EXAMPLES`` (default 25) is hypothesis' budget per operation; the default makes
well over 1,000 requests across the 16 operations in CI (docs/RELIABILITY.md has a larger run),
and the last test checks that they were made."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from polyclip.service.app import create_app
from polyclip.service.config import Limits, ModelConfig, Settings
from tests.live import live_server

EXAMPLES = int(os.environ.get("POLYCLIP_FUZZ_EXAMPLES", "25"))
MIN_REQUESTS = 1000  # in CI, across every operation
calls: list[str] = []  # one entry per request made


@pytest.fixture(scope="module")
def fuzz_server(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings_ = Settings(
        models={n: ModelConfig(path=str(p)) for n, p in model_dirs.items()},
        aliases={"teacher": "clip-tiny", "student": "student-tiny"},
        data_dir=tmp_path_factory.mktemp("fuzz") / "q",
        qdrant_url=None,
        limits=Limits(max_items=32, max_body_bytes=1_000_000, request_timeout_s=10),
    )
    with live_server(settings_) as base:
        httpx.post(f"{base}/collections", json={"name": "docs", "model": "teacher"})
        yield base


# The schema does not depend on the models: read it from an app that was never started.
# (schemathesis' lazy `from_fixture` loader does not run under pytest 9.)
_SCHEMA_APP = create_app(Settings(models={"m": ModelConfig(path=".")}, qdrant_url=None))
schema = schemathesis.openapi.from_dict(_SCHEMA_APP.openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
def test_no_input_breaks_the_server(case: schemathesis.Case, fuzz_server: str) -> None:
    calls.append(f"{case.method} {case.path}")
    case.call_and_validate(
        base_url=fuzz_server, checks=[not_a_server_error, response_schema_conformance]
    )


def test_the_fuzzing_made_enough_requests() -> None:
    """Runs after the cases above: every operation was exercised, 1,000+ requests in all."""
    operations = {f"{r.ok().method} {r.ok().path}".upper() for r in schema.get_all_operations()}
    assert operations <= {c.upper() for c in calls}  # (and methods no route has, as negatives)
    if EXAMPLES >= 25:
        assert len(calls) >= MIN_REQUESTS, len(calls)
    print(f"schemathesis: {len(calls)} requests over {len(operations)} operations, 0 x 5xx")
