"""Serving configuration: one YAML file lists the models, aliases, store and limits.

Sources, strongest first: keyword arguments, ``POLYCLIP_*`` environment variables (nested keys with
``__``, e.g. ``POLYCLIP_LIMITS__MAX_ITEMS=64``; ``QDRANT_URL`` also works unprefixed), then the
YAML file named by ``--config`` or ``POLYCLIP_CONFIG``. Relative paths are taken from the working
directory, as everywhere else in polyclip.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from polyclip.encoders.errors import EncoderError

CONFIG_ENV = "POLYCLIP_CONFIG"
_config_file: ContextVar[Path | None] = ContextVar("polyclip_config_file", default=None)


class ConfigError(EncoderError):
    """A configuration that cannot be served; the CLI prints it as one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """One served model. ``kind`` and ``backend`` are checked against what the folder holds."""

    path: str
    kind: Literal["auto", "text", "dual"] = "auto"  # dual: text + image towers (CLIP/SigLIP)
    backend: Literal["auto", "torch", "onnx"] = "auto"  # the folder decides; this only checks
    device: str = "cpu"
    space: str | None = None  # override the embedding-space id the model reports
    max_seq_length: int | None = Field(None, ge=1)  # a lower cap than the model's own
    prefixes: dict[Literal["query", "passage"], str] | None = None  # override the model's
    max_batch_tokens: int = Field(16384, ge=1)  # padded tokens per forward pass
    max_batch_size: int = Field(64, ge=1)
    max_wait_ms: float = Field(2.0, ge=0)  # how long a lone request waits for company
    max_queue_items: int = Field(4096, ge=1)  # texts/images waiting; beyond this: 429
    # A second worker runs small requests (<= 8 inputs) beside a running large batch, so they
    # do not wait for it; off: they wait for the forward pass in progress (all cores to one).
    express: bool = True


class Limits(_Strict):
    """Bounds on what clients send and hold; each breach is a clear 4xx (or a JSON 503 for the
    server-wide caps), never a 5xx, a stuck worker or a dropped connection. The defaults and
    what each protects are listed in docs/RELIABILITY.md."""

    max_items: int = Field(256, ge=1)  # texts, images or points in one request
    max_text_chars: int = Field(32_768, ge=1)
    max_image_bytes: int = Field(8 * 2**20, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)  # one image, read from its header
    max_request_pixels: int = Field(64_000_000, ge=1)  # all images of one request together
    max_body_bytes: int = Field(32 * 2**20, ge=1024)
    max_query_body_bytes: int = Field(2**20, ge=1024)  # search, deletes, creates, admin
    max_payload_depth: int = Field(16, ge=1, le=64)  # the store stops decoding at 128
    max_payload_keys: int = Field(1024, ge=1)
    max_payload_bytes: int = Field(64 * 2**10, ge=64)  # one point's payload, as JSON
    max_collections: int = Field(100, ge=1)  # each embedded one holds threads and files
    max_concurrent_requests: int = Field(256, ge=1)  # in flight; beyond: 503 + Retry-After
    request_read_timeout_s: float = Field(30.0, gt=0)  # to receive a whole request body
    request_timeout_s: float = Field(30.0, gt=0)  # for the model to answer
    allow_image_urls: bool = False  # when on, private and loopback addresses are still refused
    url_timeout_s: float = Field(10.0, gt=0)  # the whole download, connect to last byte


class DemoConfig(_Strict):
    """A small collection indexed at startup (once: skipped when it already exists)."""

    collection: str
    model: str
    texts: list[str] = Field(default_factory=list)
    data_file: Path | None = None  # one text per line, ``.gz`` allowed
    max_texts: int | None = Field(None, ge=1)  # the first N lines of ``data_file``
    lang: str | None = None  # stored as payload ``lang`` for ``lang`` filters

    @model_validator(mode="after")
    def _has_texts(self) -> DemoConfig:
        if not self.texts and self.data_file is None:
            raise ValueError("demo needs `texts` or `data_file`")
        return self


class Settings(BaseSettings):
    """Everything ``polyclip serve`` needs; see ``deploy/models.example.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix="POLYCLIP_", env_nested_delimiter="__", extra="forbid"
    )

    models: dict[str, ModelConfig]
    aliases: dict[str, str] = Field(default_factory=dict)
    data_dir: Path = Path("artifacts/qdrant")  # the embedded store's directory
    # Embedded store: flush written collections to disk every N s (0: inside every write).
    # A killed process loses nothing either way; an OS crash loses at most ~N s of writes.
    flush_interval_s: float = Field(1.0, ge=0)
    # Embedded store: segments smaller than this (KB of vectors) are searched exactly, not
    # indexed or quantised; None: Qdrant's default (10,000 KB, ~3,300 768-d vectors).
    indexing_threshold_kb: int | None = Field(None, ge=1)
    qdrant_url: str | None = Field(
        None, validation_alias=AliasChoices("qdrant_url", "polyclip_qdrant_url")
    )  # set it (or QDRANT_URL) to use a Qdrant server instead; ":memory:" for tests
    qdrant_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("qdrant_api_key", "polyclip_qdrant_api_key")
    )
    # qdrant-client's local mode on disk: the server path, without a server. One process at a
    # time (qdrant-client locks the folder); what it writes opens with QdrantClient(path=...).
    qdrant_path: Path | None = None
    api_key: SecretStr | None = None  # Bearer key for every route but /health, /ready, /metrics
    admin_api_key: SecretStr | None = None  # for /admin/*; default: api_key
    # Host headers answered; None: loopback names for a loopback bind, any for other binds
    allowed_hosts: list[str] | None = None
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed; [] = none
    host: str = "127.0.0.1"  # the address `polyclip serve` binds (its --host sets it)
    keepalive_timeout_s: float = Field(5.0, gt=0)  # idle keep-alive connections are closed
    # Hand freed heap pages back to the OS every N s (glibc's malloc_trim; 0: never). Without it
    # resident memory rises in steps under mixed traffic though nothing leaks (RELIABILITY.md).
    memory_trim_interval_s: float = Field(60.0, ge=0)
    limits: Limits = Field(default_factory=Limits)
    demo: DemoConfig | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=path)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if not self.models:
            raise ValueError("`models` must list at least one model")
        for name in ("api_key", "admin_api_key"):
            key = getattr(self, name)
            if key is not None and not key.get_secret_value().strip():
                raise ValueError(
                    f"{name} is set but empty (an unset secret in the environment?); unset it "
                    "to serve without a key, or give a key"
                )
        for alias, target in self.aliases.items():
            if alias in self.models:
                raise ValueError(f"alias {alias!r} has the name of a model; rename one of them")
            if target not in self.models:
                raise ValueError(f"alias {alias!r} points at {target!r}, which is not a model")
        for name, m in self.models.items():
            if m.max_queue_items < self.limits.max_items:
                raise ValueError(
                    f"model {name!r}: max_queue_items ({m.max_queue_items}) must be at least "
                    f"limits.max_items ({self.limits.max_items})"
                )
        if self.qdrant_url and self.qdrant_path:
            raise ValueError("give qdrant_url (a server) or qdrant_path (local files), not both")
        if self.demo and self.demo.model not in self.models and self.demo.model not in self.aliases:
            raise ValueError(f"demo.model {self.demo.model!r} is neither a model nor an alias")
        return self


def config_path(path: str | Path | None = None) -> Path | None:
    """The YAML file to read: ``path``, else ``$POLYCLIP_CONFIG``, else none (env only)."""
    ref = path or os.environ.get(CONFIG_ENV)
    return Path(ref) if ref else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the settings; every problem becomes one :class:`ConfigError` naming the key."""
    file = config_path(path)
    if file is not None and not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    token = _config_file.set(file)
    try:
        return Settings()  # type: ignore[call-arg]  # fields come from the sources
    except PydanticValidationError as e:
        where = f" in {file}" if file else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"invalid configuration{where}: {problems}") from e
    except (OSError, ValueError, yaml.YAMLError) as e:  # unreadable file, YAML syntax
        raise ConfigError(f"cannot read configuration {file}: {' '.join(str(e).split())}") from e
    finally:
        _config_file.reset(token)
