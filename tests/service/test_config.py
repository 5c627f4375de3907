"""Configuration: YAML + env precedence, clear one-line errors, the shipped example parses."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from polyclip.service.app import create_app_from_env
from polyclip.service.cli import cmd_serve
from polyclip.service.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_parses() -> None:
    s = load_settings(ROOT / "deploy" / "models.example.yaml")
    assert s.aliases["teacher"] in s.models and s.aliases["student"] in s.models
    assert s.models[s.aliases["teacher"]].path == "artifacts/models/all-mpnet-base-v2"
    assert s.models[s.aliases["student"]].path == "artifacts/students/default"
    assert s.demo is not None and s.demo.texts


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "models: {a: {path: /m}}\nlimits: {max_items: 10, max_text_chars: 99}\n")
    monkeypatch.setenv("POLYCLIP_LIMITS__MAX_ITEMS", "20")
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("POLYCLIP_API_KEY", "k")
    s = load_settings(path)
    assert (s.limits.max_items, s.limits.max_text_chars) == (20, 99)
    assert s.qdrant_url == "http://qdrant:6333"
    assert s.api_key is not None and s.api_key.get_secret_value() == "k"


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYCLIP_CONFIG", str(write(tmp_path, "models: {a: {path: /m}}\n")))
    assert list(load_settings().models) == ["a"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("models: {}\n", "at least one model"),
        ("models: {a: {path: /m}}\naliases: {b: c}\n", "'c', which is not a model"),
        ("models: {a: {path: /m}}\naliases: {a: a}\n", "has the name of a model"),
        ("models: {a: {path: /m, kind: video}}\n", "models.a.kind"),
        ("models: {a: {path: /m, colour: red}}\n", "models.a.colour"),
        ("models: {a: {path: /m, max_queue_items: 4}}\n", "max_queue_items"),
        ("models: {a: {path: /m}}\ndemo: {collection: c, model: zz, texts: [x]}\n", "demo.model"),
        ("models: {a: {path: /m}}\ndemo: {collection: c, model: a}\n", "texts"),
        ("models: [unclosed\n", "cannot read configuration"),
    ],
)
def test_bad_configs_are_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def _serve_args(config: Path | None, workers: int = 1) -> argparse.Namespace:
    return argparse.Namespace(
        config=config, host="127.0.0.1", port=0, workers=workers, log_level="info"
    )


def test_serve_needs_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYCLIP_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--config"):
        cmd_serve(_serve_args(None))


def test_serve_refuses_workers_sharing_the_embedded_store(tmp_path: Path) -> None:
    path = write(tmp_path, "models: {a: {path: /m}}\n")
    with pytest.raises(ConfigError, match="QDRANT_URL"):
        cmd_serve(_serve_args(path, workers=2))


def test_worker_factory_reads_the_config_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each `--workers N` process runs; startup itself is covered by the server tests."""
    path = write(tmp_path, "models: {a: {path: /m}}\napi_key: k\n")
    monkeypatch.setenv("POLYCLIP_CONFIG", str(path))
    app = create_app_from_env()
    assert app.state.settings.api_key.get_secret_value() == "k"
