"""The sidecar's one settings object: a YAML file, overridden by ``DRIFTLINE_*`` environment variables.

Nested keys use ``__`` in variable names: ``DRIFTLINE_SPOOL__MAX_BYTES=32MiB`` overrides
``spool.max_bytes``. Unknown keys in the file are refused with a message naming them. Every key is
documented in ``docs/sidecar.md`` and ``edge_sidecar/sidecar.example.yaml``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from driftline.errors import ConfigError
from driftline.settings import EnvFirstSettings, build_settings, read_yaml_settings, state_dir
from driftline.stats.decision import DriftConfig

from .errors import SettingsError

__all__ = [
    "ApiSettings",
    "GoldenSettings",
    "HttpTransportSettings",
    "JudgeSettings",
    "KafkaTransportSettings",
    "ProfileSettings",
    "ProxySettings",
    "SamplingSettings",
    "ShadowSettings",
    "ShipperSettings",
    "SidecarSettings",
    "SpoolSettings",
    "TransportSettings",
    "WindowSettings",
    "load_settings",
]

MAX_LABEL_CHARS = 64
_DRIFT_DEFAULTS = DriftConfig()  # the service's decision rule and defaults (service/settings.py uses the same)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowSettings(_Section):
    """Tumbling windows: closed on time (``seconds``) and on size (``max_rows``)."""

    seconds: float = Field(default=60.0, gt=0)
    max_rows: int = Field(default=1_000_000, ge=1)
    lateness_seconds: float = Field(default=10.0, ge=0)
    tick_seconds: float = Field(default=0.25, gt=0,
                                description="how often the monitor folds rows and closes windows")


class SamplingSettings(_Section):
    """Which rows are profiled; row counters stay exact either way."""

    rate: float = Field(default=1.0, gt=0, le=1)
    mode: Literal["request_id", "random"] = "request_id"
    seed: int = 0


class ProfileSettings(_Section):
    """Sketch sizes and forced column kinds (see ``driftline.profile.ProfileConfig``)."""

    kll_k: int = Field(default=400, ge=8, le=65535)
    fi_lg_max_k: int = Field(default=10, ge=3, le=24)
    hll_lg_k: int = Field(default=11, ge=4, le=21)
    categorical: list[str] = []
    numeric: list[str] = []
    reservoir_size: int = Field(default=0, ge=0, le=65536, description="raw rows each window keeps as a uniform "
                                "sample, for the service's drill-downs (Evidently report, domain classifier); 0: none")


class SpoolSettings(_Section):
    """The crash-safe disk spool of closed windows (default: the sidecar's state directory, not the working one)."""

    path: Path = Field(default_factory=lambda: state_dir("sidecar") / "spool")
    max_bytes: ByteSize = ByteSize(64 * 1024 * 1024)
    fsync: bool = True
    rejected_max_files: int = Field(default=1000, ge=1)


class HttpTransportSettings(_Section):
    """``POST {url}/v1/ingest`` with the envelope bytes."""

    url: str = "http://127.0.0.1:8000"  # the service's default port
    token: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    ca_file: Path | None = None
    verify_tls: bool = True


class KafkaTransportSettings(_Section):
    """kafka-python producer settings; TLS and SASL keys are passed through as given."""

    bootstrap_servers: Annotated[list[str], NoDecode] = ["127.0.0.1:9092"]
    topic: str = "driftline.envelopes"
    client_id: str = "driftline-sidecar"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    request_timeout_ms: int = Field(default=15_000, ge=1000)
    max_block_ms: int = Field(default=10_000, ge=100)
    retries: int = Field(default=5, ge=0)
    retry_backoff_ms: int = Field(default=200, ge=0)
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none", description="producer batch compression; envelope bodies are zlib-compressed when that "
        "saves a quarter of their bytes, so 'none' is the default ('lz4', 'zstd', 'snappy' need their Python package on the device)")
    enable_idempotence: bool = Field(default=True, description="idempotent producer: a retried batch is "
                                     "written once per partition (kafka-python >= 2.2.0)")
    max_request_size: ByteSize = Field(default=ByteSize(4 * 1024 * 1024 + 64 * 1024), ge=1024,
                                       description="largest record the producer sends: the service's "
                                       "envelope limit plus headroom; the topic's max.message.bytes must allow it")
    extra: dict[str, Any] = Field(default={}, description="any other KafkaProducer keyword, passed through")

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):  # "host:9092,host2:9092" or a JSON list, as environment variables give it
            return json.loads(v) if v.lstrip().startswith("[") else [s.strip() for s in v.split(",") if s.strip()]
        return v


class TransportSettings(_Section):
    """Where closed windows go: ``http`` (the default) or ``kafka``."""

    kind: Literal["http", "kafka"] = "http"
    compress: Literal["auto", "always", "never"] = Field(
        default="auto", description="zlib on envelope bodies (in the spool and on the wire): 'auto' only when it "
        "saves a quarter of the bytes (float64 sketches barely compress, and inflating them is the service's "
        "largest cost per envelope), 'always' for metered links where every byte counts, 'never' for the least CPU")
    http: HttpTransportSettings = HttpTransportSettings()
    kafka: KafkaTransportSettings = KafkaTransportSettings()


class ShipperSettings(_Section):
    """Delivery from spool to transport: batches, exponential backoff with jitter, shutdown grace."""

    batch_windows: int = Field(default=32, ge=1)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)


class ApiSettings(_Section):
    """The local HTTP port: ``POST /v1/observe``, ``GET /healthz``, ``GET /metrics``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8471, ge=0, le=65535)
    observe: bool = True
    max_body_bytes: ByteSize = ByteSize(8 * 1024 * 1024)
    max_rows_per_request: int = Field(default=100_000, ge=1)


class ShadowSettings(_Section):
    """Mirror each served inference call to a shadow model server, off the serving path (docs/sidecar.md)."""

    enabled: bool = False
    upstream: str | None = Field(default=None, description="the shadow model server, an http:// URL")
    timeout_seconds: float = Field(default=1.0, gt=0, description="per mirrored call; a slower shadow is an error")
    queue: int = Field(default=256, ge=1, description="mirrors waiting; more are dropped and counted")
    variant: str = Field(default="shadow", min_length=1, max_length=MAX_LABEL_CHARS)
    model_version: str = Field(default="shadow", description="when the shadow's answer names none (not the "
                               "live default, so the two streams' drift is never merged under one version)")
    score_output: str | None = Field(default=None, description="default: the first floating-point output")
    label_output: str | None = Field(default=None, description="default: the first string, boolean or "
                                     "integer output, else score >= positive_threshold")
    positive_threshold: float = 0.5

    @model_validator(mode="after")
    def _needs_upstream(self) -> ShadowSettings:
        if self.enabled and not (self.upstream or "").startswith("http://"):
            raise ValueError("proxy.shadow.upstream must be an http:// URL when proxy.shadow.enabled is true")
        return self


class ProxySettings(_Section):
    """The transparent Open Inference Protocol v2 reverse proxy in front of a model server."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    upstream: str = "http://127.0.0.1:8080"
    model_version: str = "unknown"
    variant: str = "default"
    pool_size: int = Field(default=32, ge=1)
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_buffer_bytes: ByteSize = ByteSize(64 * 1024 * 1024)
    max_capture_bytes: ByteSize = ByteSize(16 * 1024 * 1024)
    max_features_per_tensor: int = Field(default=256, ge=1)
    feature_names: dict[str, list[str]] = Field(default={}, description="tensor name -> column names")
    capture_queue: int = Field(default=1000, ge=1)
    shadow: ShadowSettings = ShadowSettings()


class JudgeSettings(_Section):
    """Drift judged on the device against the reference the service pushes (or a file): see docs/sidecar.md."""

    enabled: bool = False
    service_url: str | None = Field(default=None, description="where references come from; default: "
                                    "transport.http.url when the transport is http, else none (files only)")
    token: SecretStr | None = Field(default=None, description="bearer token (read, write or this device's "
                                    "token); default: transport.http.token")
    reference_files: list[Path] = Field(default=[], description="profile files used as references (devices "
                                        "that never reach the service); they win over fetched ones")
    poll_seconds: float = Field(default=300.0, gt=0, description="how often a fetched reference is re-checked "
                                "(If-None-Match with its ETag)")
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_reference_bytes: ByteSize = ByteSize(64 * 1024 * 1024)
    max_streams: int = Field(default=32, ge=1, description="model versions judged (and references kept)")
    rolling_windows: int = Field(default=6, ge=1, description="recent windows merged for the rolling verdict")
    attach_verdict: bool = Field(default=True, description="send each window's verdict with it")
    max_drifted_names: int = Field(default=8, ge=0, le=16)
    # the decision rule: the same names and defaults as the service's `evaluation` section
    alpha: float = Field(default=_DRIFT_DEFAULTS.alpha, gt=0, lt=1)
    min_rows: int = Field(default=_DRIFT_DEFAULTS.min_rows, ge=1)
    drift_share_threshold: float = Field(default=_DRIFT_DEFAULTS.drift_share_threshold, gt=0, le=1)
    thresholds: dict[str, float] = {}
    critical_features: dict[str, list[str]] = {}
    # the local action
    persist_seconds: float = Field(default=300.0, ge=0, description="dataset drift must last this long "
                                   "(window time) before the action runs")
    cooldown_seconds: float = Field(default=3600.0, ge=0, description="at most one action per model version "
                                    "in this time")
    action_url: str | None = Field(default=None, description="POST the verdict as JSON here (a local URL)")
    action_command: list[str] = Field(default=[], description="or run this command, the verdict JSON on stdin")
    action_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("action_url", "service_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _rule_is_valid(self) -> JudgeSettings:
        try:  # unknown methods or bad thresholds are refused when the settings load, not at every window
            self.drift_config("")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def drift_config(self, model: str) -> DriftConfig:
        """The :class:`DriftConfig` the service's evaluator builds from the same settings."""
        return DriftConfig(alpha=self.alpha, min_rows=self.min_rows, drift_share_threshold=self.drift_share_threshold,
                           thresholds={**DriftConfig().thresholds, **self.thresholds},
                           critical_features=frozenset(self.critical_features.get(model, [])))


class GoldenSettings(_Section):
    """Golden-set conformance: the sidecar runs golden sets through the local model server (docs/sidecar.md)."""

    enabled: bool = False
    paths: list[Path] = Field(default=[], description="golden set files (driftline golden build), one per "
                              "model version; at most 16")
    upstream: str | None = Field(default=None, description="OIP v2 model server the sets run through; default: "
                                 "proxy.upstream (an SDK callback given to Sidecar() wins)")
    interval_seconds: float = Field(default=3600.0, gt=0, description="a scheduled run this often")
    check_seconds: float = Field(default=30.0, gt=0, description="how often the served model version is "
                                 "checked; a change runs every set again")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per request to the model server")
    batch_size: int = Field(default=64, ge=1, le=100_000, description="cases per inference request")
    max_bytes: ByteSize = ByteSize(64 * 1024 * 1024)

    @field_validator("upstream")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("http://"):
            raise ValueError(f"must be an http:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _has_sets(self) -> GoldenSettings:
        if self.enabled and not self.paths:
            raise ValueError("golden.enabled needs at least one file in golden.paths")
        if len(self.paths) > 16:
            raise ValueError("golden.paths holds at most 16 golden sets")
        return self


class LabelSettings(_Section):
    """Delayed labels: rows with a ``request_id`` are remembered and joined with ``POST /v1/labels``."""

    enabled: bool = False
    output: str = Field(default="prediction", description="the output holding the score (binary) or value")
    task: Literal["binary", "regression"] = "binary"
    threshold: float = Field(default=0.5, ge=0, le=1)
    horizon_seconds: float = Field(default=3600.0, gt=0)
    max_pending: int = Field(default=100_000, ge=1, le=10_000_000)
    flush_seconds: float = Field(default=10.0, gt=0)


class SidecarSettings(EnvFirstSettings):
    """Everything ``driftline sidecar`` needs; defaults are safe on loopback."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", env_nested_delimiter="__", extra="forbid")

    device: str = Field(default_factory=socket.gethostname, max_length=128)
    cohort: dict[str, str] = {}
    model: str | None = Field(default=None, description="default model name for rows that do not say")
    model_version: str | None = None
    variant: str = "default"
    models: list[str] = Field(default=[], description="allowed model names; empty allows any")
    max_streams: int = Field(default=1000, ge=1)
    max_features: int = Field(default=2000, ge=1)
    max_cohort_labels: int = Field(default=8, ge=0)
    window: WindowSettings = WindowSettings()
    sampling: SamplingSettings = SamplingSettings()
    profile: ProfileSettings = ProfileSettings()
    spool: SpoolSettings = SpoolSettings()
    transport: TransportSettings = TransportSettings()
    shipper: ShipperSettings = ShipperSettings()
    api: ApiSettings = ApiSettings()
    proxy: ProxySettings = ProxySettings()
    judge: JudgeSettings = JudgeSettings()
    watch_pid: int | None = Field(default=None, gt=0, description="host process (the model server) whose RSS "
                                  "and CPU travel in the producer map as host_* keys (edge_sidecar/hostwatch.py)")
    watch_pid_file: Path | None = Field(default=None, description="or read the host's pid from this file on every "
                                        "sample (follows a restarted host); wins over watch_pid")
    golden: GoldenSettings = GoldenSettings()
    labels: LabelSettings = LabelSettings()

    @field_validator("cohort")
    @classmethod
    def _bounded_cohort(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if len(key) > MAX_LABEL_CHARS or len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"cohort label {key!r} is longer than {MAX_LABEL_CHARS} characters")
        return v


def load_settings(path: str | Path | None = None, **overrides: Any) -> SidecarSettings:
    """Read the YAML file (if any) with ``overrides`` (tests) on top; ``DRIFTLINE_*`` variables win over both."""
    data = read_yaml_settings(path, SettingsError) if path is not None else {}
    return build_settings(SidecarSettings, _deep_merge(data, overrides), what="sidecar settings", path=path,
                          error=SettingsError)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
