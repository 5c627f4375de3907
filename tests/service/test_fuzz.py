"""Schemathesis fuzzing against the OpenAPI schema of a live server: no input gives a 5xx,
and every documented response matches its schema (errors included)."""

from __future__ import annotations

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
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_server(case: schemathesis.Case, fuzz_server: str) -> None:
    case.call_and_validate(
        base_url=fuzz_server, checks=[not_a_server_error, response_schema_conformance]
    )
