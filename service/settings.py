"""The service's one settings object: a YAML file, overridden by ``DRIFTLINE_*`` environment variables.

Nested keys use ``__``: ``DRIFTLINE_KAFKA__ENABLED=true``. With no file and no variables the service
runs on the embedded defaults: SQLite in ``./driftline.sqlite``, HTTP ingest, no Kafka, port 8000.
See ``service/config.example.yaml`` for every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from driftline.settings import EnvFirstSettings, build_settings, read_yaml_settings

__all__ = [
    "CanarySettings",
    "EvaluationSettings",
    "KafkaSettings",
    "RetrainSettings",
    "RetrainTarget",
    "ServiceSettings",
    "load_settings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationSettings(_Section):
    """How drift is evaluated: which window of recent data, how often, and the decision rule."""

    current_window_seconds: float = Field(3600.0, gt=0, description="drift looks at this much recent data")
    interval_seconds: float = Field(30.0, gt=0, description="background evaluation period")
    history_bucket_seconds: float = Field(300.0, gt=0, description="bucket size of the drift history heatmap")
    min_rows: int = Field(30, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    drift_share_threshold: float = Field(0.5, gt=0, le=1)
    thresholds: dict[str, float] = {}
    critical_features: dict[str, list[str]] = Field({}, description="model -> features that page when drifting")
    auto_reference_rows: int = Field(0, ge=0, description="if > 0 and no reference is uploaded, use the first N rows")
    auto_reference_hours: float = Field(0.0, ge=0, description="or the first N hours after a version starts")
    seasonal_reference: bool = Field(False, description="compare with the same period one week earlier")


class KafkaSettings(_Section):
    """The envelope consumer (off by default)."""

    enabled: bool = False
    bootstrap_servers: list[str] = ["127.0.0.1:9092"]
    topic: str = "driftline.envelopes"
    dead_letter_topic: str = "driftline.envelopes.dlq"
    group_id: str = "driftline-service"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    poll_timeout_ms: int = Field(500, ge=10)
    max_poll_records: int = Field(200, ge=1)
    reconnect_backoff_initial_seconds: float = Field(1.0, gt=0, description="first wait after the broker is lost")
    reconnect_backoff_max_seconds: float = Field(30.0, gt=0, description="waits double (with jitter) up to this")
    health_interval_seconds: float = Field(5.0, gt=0, description="how often the broker is probed and lag measured")
    request_timeout_ms: int = Field(5000, ge=100, description="bounds each broker request, so a lost broker "
                                    "is noticed")
    record_attempts: int = Field(3, ge=1, description="store attempts of a record that fails while others "
                                 "store fine, before it is dead-lettered")


class RetrainTarget(_Section):
    """Where retraining requests go; ``kind`` picks the payload template."""

    name: str
    url: str
    kind: Literal["webhook", "argo_events", "argo_workflows", "github_dispatch"] = "webhook"
    token: SecretStr | None = None
    models: list[str] = Field([], description="only these models (empty: all)")
    workflow_template: str = Field("driftline-retrain", description="argo_workflows: the WorkflowTemplate to submit")


class RetrainSettings(_Section):
    """Retraining requests: one policy for the Alertmanager receiver and the internal evaluator."""

    targets: list[RetrainTarget] = []
    secret: SecretStr = SecretStr("change-me")
    internal_policy: bool = Field(True, description="evaluate the policy in the service (no Alertmanager)")
    sustained_seconds: float = Field(900.0, ge=0, description="dataset drift held this long starts retraining "
                                     "(the same as the 'for:' of DriftlineRetrainModel in alerts/)")
    cooldown_seconds: float = Field(3600.0, ge=0)
    deadline_seconds: float = Field(86400.0, gt=0, description="give up delivering after this long")
    backoff_initial_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)
    timeout_seconds: float = Field(10.0, gt=0)


class CanarySettings(_Section):
    """A canary declared in the config file (also possible with PUT /v1/models/{model}/canary)."""

    model: str
    baseline_version: str
    canary_version: str
    min_rows: int = 1000
    min_duration_seconds: float = 300.0
    alpha: float = 0.05


class ServiceSettings(EnvFirstSettings):
    """Everything ``driftline service`` needs; safe defaults on loopback."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    database_url: str = Field("sqlite:///driftline.sqlite", description="sqlite:///PATH or postgresql://...")
    api_token: SecretStr | None = Field(None, description="bearer token required on write endpoints")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    cohort_top_n: int = Field(20, ge=1)
    public_url: str = Field("", description="base URL used in links (dashboards, webhooks)")
    retention_raw_days: float = Field(2.0, gt=0, description="keep raw windows this long, then roll up hourly")
    retention_hourly_days: float = Field(30.0, gt=0, description="keep hourly windows this long, then daily")
    evaluation: EvaluationSettings = EvaluationSettings()
    kafka: KafkaSettings = KafkaSettings()
    retrain: RetrainSettings = RetrainSettings()
    canaries: list[CanarySettings] = []


def load_settings(path: str | Path | None = None, **overrides: Any) -> ServiceSettings:
    """Read the YAML file (if any), apply overrides, then the environment; errors name the key."""
    data = read_yaml_settings(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build_settings(ServiceSettings, data, what="service settings", path=path)
