"""The service's one settings object: a YAML file, overridden by ``DRIFTLINE_*`` environment variables.

Nested keys use ``__``: ``DRIFTLINE_KAFKA__ENABLED=true``. With no file and no variables the service
runs on the embedded defaults: SQLite in ``./driftline.sqlite``, HTTP ingest, no Kafka, port 8000.
See ``service/config.example.yaml`` for every key.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.dataclasses import dataclass as typed_dataclass
from pydantic_settings import SettingsConfigDict

from driftline.settings import EnvFirstSettings, build_settings, read_yaml_settings
from driftline.stats.canary import CanaryConfig
from driftline.stats.decision import DriftConfig

_DRIFT_DEFAULTS = DriftConfig()  # the decision rule's defaults live in one place

__all__ = [
    "CanarySettings",
    "DeviceHealthSettings",
    "EvaluationSettings",
    "KafkaSettings",
    "LimitSettings",
    "RetrainSettings",
    "RetrainTarget",
    "ServiceSettings",
    "ShadowSettings",
    "exposure_problem",
    "kafka_options",
    "load_settings",
]


WEAK_SECRETS = frozenset({"change-me", "changeme", "secret", "password"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationSettings(_Section):
    """How drift is evaluated: which window of recent data, how often, and the decision rule."""

    current_window_seconds: float = Field(3600.0, gt=0, description="drift looks at this much recent data")
    interval_seconds: float = Field(30.0, gt=0, description="background evaluation period")
    history_bucket_seconds: float = Field(300.0, gt=0, description="bucket size of the drift history heatmap")
    min_rows: int = Field(30, ge=1)
    alpha: float = Field(_DRIFT_DEFAULTS.alpha, gt=0, lt=1, description="false discovery rate of the drift tests")
    drift_share_threshold: float = Field(0.5, gt=0, le=1)
    thresholds: dict[str, float] = {}
    critical_features: dict[str, list[str]] = Field({}, description="model -> features that page when drifting")
    auto_reference_rows: int = Field(0, ge=0, description="if > 0 and no reference is uploaded, use the first N rows")
    auto_reference_hours: float = Field(0.0, ge=0, description="or the first N hours after a version starts")
    seasonal_reference: bool = Field(False, description="compare with the same period one week earlier")
    multivariate_z: float = Field(3.0, gt=0, description="half-width in standard errors of the band of the mean "
                                  "reconstruction error (docs/statistics.md)")
    multivariate_min_rows: int = Field(100, ge=2, description="rows a range needs before its reconstruction error "
                                       "is judged")


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
    consumer_options: dict[str, Any] = Field({}, description="any other librdkafka consumer property, dotted "
                                             "(fetch.max.bytes) or with underscores (session_timeout_ms)")
    producer_options: dict[str, Any] = Field({}, description="any other librdkafka producer property for the "
                                             "dead-letter producer (e.g. compression.type)")

    @field_validator("consumer_options", "producer_options")
    @classmethod
    def _known_options(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        """Refuse properties librdkafka does not know or takes a bad value of, and those the service owns
        (named settings, commits)."""
        owned = sorted(key for key in v if _dotted(key) in _KAFKA_OWNED)
        if owned:
            raise ValueError(f"{', '.join(owned)}: set by the service or by a named kafka setting, "
                             "not through the options")
        try:
            import confluent_kafka
        except ImportError:  # validated again when the consumer starts
            return v
        client = confluent_kafka.Consumer if info.field_name == "consumer_options" else confluent_kafka.Producer
        try:  # no bootstrap servers: the client checks its properties and connects nowhere
            conf = {**kafka_options(v), "logger": _QUIET}
            probe = client({"group.id": "driftline-settings-check", **conf} if client is confluent_kafka.Consumer
                           else conf)
        except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid Kafka client option: {_client_error_text(exc)}") from None
        if client is confluent_kafka.Consumer:
            probe.close()
        return v

    def security_properties(self) -> dict[str, Any]:
        """The librdkafka properties of the named security settings (protocol, SASL, TLS files)."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol}
        for name, prop in (("sasl_mechanism", "sasl.mechanism"), ("sasl_plain_username", "sasl.username"),
                           ("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                           ("ssl_keyfile", "ssl.key.location")):
            if getattr(self, name) is not None:
                conf[prop] = getattr(self, name)
        if self.sasl_plain_password is not None:
            conf["sasl.password"] = self.sasl_plain_password.get_secret_value()
        return conf

    def security_problem(self) -> str | None:
        """Why an enabled consumer's TLS files or SASL mechanism would not load, or None.

        They are loaded here as librdkafka loads them (a client built with no brokers), so ``driftline
        service`` stops at start with the reason instead of entering a reconnect loop. Not a settings
        validator: a configuration is valid on a machine where the files are not mounted (a chart
        rendered in CI), and only the process that will use them needs them.
        """
        if not self.enabled or self.security_protocol == "PLAINTEXT":
            return None
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                return f"kafka.{name}: {path} is not a readable file"
        try:
            import confluent_kafka
        except ImportError:
            return None
        try:  # no bootstrap servers: builds the TLS context and SASL state, connects nowhere
            confluent_kafka.Producer({**self.security_properties(), "logger": _QUIET})
        except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
            return f"kafka security settings: {_client_error_text(exc)}"
        return None


def _dotted(key: str) -> str:
    """A Kafka client property in librdkafka's spelling: ``max_partition_fetch_bytes`` is
    ``max.partition.fetch.bytes``; the few names the Java client and kafka-python spell differently
    (``fetch_max_wait_ms``) map to librdkafka's, so options written for the old consumer still work."""
    dotted = key.replace("_", ".")
    return _JAVA_NAMES.get(dotted, dotted)


def _client_error_text(exc: BaseException) -> str:
    """librdkafka's own text of a client that refused to build (a KafkaError inside the exception)."""
    err = exc.args[0] if exc.args else exc
    return str(err.str()) if hasattr(err, "str") else str(err)


_QUIET = logging.getLogger("driftline.service.kafka.settings_check")
"""librdkafka's log of the clients built only to check settings (they warn that they have no brokers)."""
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())

_JAVA_NAMES = {"fetch.max.wait.ms": "fetch.wait.max.ms"}  # same meaning and unit, another spelling


def kafka_options(options: dict[str, Any]) -> dict[str, Any]:
    """``consumer_options`` / ``producer_options`` as librdkafka properties, values as strings where
    librdkafka wants them (YAML gives booleans and numbers)."""
    return {_dotted(k): (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items()}


# Properties a passthrough must not change: the commit-after-store protocol, and those with their own setting.
_KAFKA_OWNED = frozenset({"bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store",
                          "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username",
                          "sasl.password", "sasl.plain.username", "sasl.plain.password", "ssl.ca.location",
                          "ssl.certificate.location", "ssl.key.location", "ssl.cafile", "ssl.certfile",
                          "ssl.keyfile", "max.poll.records", "acks", "request.required.acks", "isolation.level",
                          "enable.partition.eof", "logger", "error.cb", "on.commit", "on.delivery"})


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
    secret: SecretStr | None = Field(None, description="HMAC key of X-Driftline-Signature; required with targets")
    internal_policy: bool = Field(True, description="evaluate the policy in the service (no Alertmanager)")
    sustained_seconds: float = Field(900.0, ge=0, description="dataset drift held this long starts retraining "
                                     "(the same as the 'for:' of DriftlineRetrainModel in alerts/)")
    cooldown_seconds: float = Field(3600.0, ge=0)
    deadline_seconds: float = Field(86400.0, gt=0, description="give up delivering after this long")
    backoff_initial_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)
    timeout_seconds: float = Field(10.0, gt=0, description="deadline of one whole delivery attempt (connect, "
                                   "send, every byte of the answer)")
    senders: int = Field(4, ge=1, le=64, description="parallel senders; one target holds at most one at a time")

    @model_validator(mode="after")
    def _secret_with_targets(self) -> RetrainSettings:
        secret = self.secret.get_secret_value() if self.secret is not None else ""
        if self.targets and not secret:
            raise ValueError("retrain.secret is required when retrain.targets are set (receivers verify "
                             "X-Driftline-Signature with it): set DRIFTLINE_RETRAIN__SECRET")
        if secret in WEAK_SECRETS:
            raise ValueError(f"retrain.secret {secret!r} is a placeholder: use a random value")
        return self


@typed_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class CanarySettings(CanaryConfig):
    """A model's canary defaults declared in the config file: the core's :class:`CanaryConfig` plus ``model``.

    The same typed shape as the ``PUT /v1/models/{model}/canary`` body; every rollout of the model
    starts its experiment from these (a ``PUT`` overrides them in the store).
    """

    model: str = Field(kw_only=True, min_length=1, max_length=128)

    def config_dict(self) -> dict[str, Any]:
        """The config without ``model``, as the store keeps it."""
        from dataclasses import asdict

        out = asdict(self)
        out.pop("model")
        out["guardrails"] = [dict(g) for g in out["guardrails"]]
        return out


class LimitSettings(_Section):
    """Server-side caps: past one, a write is refused (422) and counted, never a new series."""

    max_models: int = Field(50, ge=1, description="distinct models")
    max_versions_per_model: int = Field(10, ge=1)
    max_features_per_model: int = Field(1000, ge=1, description="distinct feature and output names per model")
    max_feature_series: int = Field(3000, ge=1, description="distinct (model, version, feature or output) over "
                                    "all models: bounds the drift series in /metrics")
    max_cohort_labels: int = Field(8, ge=1, description="distinct cohort labels per model")
    max_cohort_values: int = Field(50, ge=1, description="distinct values per cohort label per model")


class DeviceHealthSettings(_Section):
    """Leaks and latency regressions per device (service/device_health.py, docs/statistics.md)."""

    enabled: bool = True
    interval_seconds: float = Field(300.0, gt=0, description="how often the leader fits the trends")
    horizon_seconds: float = Field(21600.0, gt=0, description="samples are kept and fitted this long")
    min_sample_interval_seconds: float = Field(60.0, ge=0, description="at most one sample per series this often")
    max_samples: int = Field(720, ge=8, le=100_000, description="newest samples per series that are kept")
    fit_points: int = Field(120, ge=8, le=2000, description="samples thinned evenly to this many for a fit "
                            "(Theil-Sen costs n^2)")
    max_devices: int = Field(2000, ge=1, description="devices tracked; the least recently seen beyond are dropped")
    exposed_devices: int = Field(100, ge=0, description="devices with series on /metrics (flagged first); "
                                 "the rest are counted")
    max_queued_samples: int = Field(100_000, ge=1, description="samples held while the store is down")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="two-sided level of the slope's interval")
    leak_min_bytes_per_hour: float = Field(16 * 1024 * 1024, ge=0, description="a leak: the memory slope's lower "
                                           "bound above this")
    cpu_min_cores_per_hour: float = Field(0.05, ge=0, description="CPU creep: the CPU-use slope's lower bound "
                                          "above this")
    leak_min_samples: int = Field(20, ge=3, description="no leak or creep is called on fewer samples")
    latency_recent_windows: int = Field(6, ge=1)
    latency_min_baseline: int = Field(12, ge=2)
    latency_max_baseline: int = Field(48, ge=2)
    latency_alpha: float = Field(0.001, gt=0, lt=1, description="one-sided Mann-Whitney level (per device and "
                                 "fit: a fleet tests many)")
    latency_min_increase: float = Field(0.2, ge=0, description="and the recent median p95 at least this much "
                                        "above the baseline median (0.2: 20 %)")


class PerformanceSettings(_Section):
    """Real performance from delayed labels (service/performance.py, docs/performance.md)."""

    lookback_seconds: float = Field(3600.0, gt=0, description="the gauges merge the labels of this long a "
                                    "past (at most the raw retention)")
    min_labelled: int = Field(50, ge=1, description="fewer labels than this breach no bound")
    thresholds: dict[Literal["accuracy", "precision", "recall", "f1", "roc_auc", "ece", "mae", "rmse"], float] = \
        Field({}, description="metric -> bound: a minimum (ece, mae, rmse: a maximum); a breach held for "
              "retrain.sustained_seconds starts a retraining")


class ShadowSettings(_Section):
    """How shadow models are judged against live (``driftline.stats.shadow``; docs/statistics.md)."""

    variant: str = Field("shadow", min_length=1, max_length=64, description="the shadow stream's variant")
    lookback_seconds: float = Field(86400.0, gt=0, description="pairs of this much recent data are judged")
    alpha: float = Field(0.05, gt=0, lt=1)
    max_disagreement: float = Field(0.02, ge=0, le=1, description="largest acceptable share of rows whose "
                                    "predicted labels differ")
    score_tolerance: float = Field(0.05, ge=0, description="largest acceptable |mean paired score difference|")
    error_tolerance: float = Field(0.02, ge=0, le=1, description="largest acceptable error-rate increase")
    latency_p99_tolerance: float | None = Field(None, ge=0, description="largest acceptable relative p99 increase "
                                                "(none: reported, not tested)")
    min_pairs: int = Field(500, ge=1, description="paired requests before a shadow can be called ready")
    min_rows_worse: int = Field(50, ge=1)
    t_star: float = Field(1000.0, gt=0)

    def config(self) -> Any:
        """The core's :class:`~driftline.stats.shadow.ShadowConfig` of these settings."""
        from driftline.stats.shadow import ShadowConfig

        return ShadowConfig(**self.model_dump(exclude={"variant", "lookback_seconds"}))


class ServiceSettings(EnvFirstSettings):
    """Everything ``driftline service`` needs; safe defaults on loopback."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    database_url: str = Field("sqlite:///driftline.sqlite", description="sqlite:///PATH or postgresql://...")
    database_pool_size: int = Field(8, ge=1, le=100, description="PostgreSQL: most connections per process")
    database_timeout_seconds: float = Field(5.0, gt=0, description="wait this long for a database connection, "
                                            "then answer 503")
    liveness_store_failure_seconds: float = Field(120.0, gt=0, description="/healthz fails once store writes have "
                                                  "failed this long without a break")
    api_token: SecretStr | None = Field(None, description="bearer token required on write endpoints (and "
                                        "accepted wherever a read token is)")
    read_token: SecretStr | None = Field(None, description="if set, bearer token required on read endpoints "
                                         "(models, drift, canary, status pages); /metrics and health stay open")
    device_tokens: dict[str, SecretStr] = Field({}, description="device id -> bearer token: a device token may "
                                                "ingest only windows whose source is that device")
    insecure: bool = Field(False, description="allow listening beyond loopback without api_token (writes open "
                           "to anyone who reaches the port)")
    report_rate_per_minute: float = Field(6.0, gt=0, description="Evidently reports (expensive) per minute, "
                                          "per process")
    limits: LimitSettings = LimitSettings()
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    gc_young_objects: int = Field(50_000, ge=0, description="allocations between the garbage collector's "
                                  "young passes (Python's default is 700; 0 keeps it); see service/process.py")
    cohort_top_n: int = Field(20, ge=1)
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line, "
                                                "with request and model ids")
    public_url: str = Field("", description="base URL used in links (dashboards, webhooks)")
    retention_raw_days: float = Field(2.0, gt=0, description="keep raw windows this long, then roll up hourly")
    retention_hourly_days: float = Field(30.0, gt=0, description="keep hourly windows this long, then daily")
    evaluation: EvaluationSettings = EvaluationSettings()
    kafka: KafkaSettings = KafkaSettings()
    retrain: RetrainSettings = RetrainSettings()
    canaries: list[CanarySettings] = []
    device_health: DeviceHealthSettings = DeviceHealthSettings()
    conformance_cohorts: list[str] = Field(["firmware", "runtime", "driver"], max_length=8,
                                           description="cohort labels the driftline_edge_conformance_* series "
                                           "and the status page break golden-set results down by")
    conformance_max_age_seconds: float = Field(7 * 86400.0, gt=0, description="a device's golden-set result "
                                               "counts this long after it arrived (a retired device's last "
                                               "result stops counting)")
    performance: PerformanceSettings = PerformanceSettings()
    shadow: ShadowSettings = ShadowSettings()


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: ServiceSettings) -> str | None:
    """Why the service must not listen as configured (beyond loopback, no write token), or None."""
    if _loopback(settings.host) or settings.api_token is not None or settings.insecure:
        return None
    return (f"refusing to listen on {settings.host} without api_token: anyone who reaches the port could write. "
            "Set DRIFTLINE_API_TOKEN (and give sidecars the token), or pass --insecure to accept open writes")


def load_settings(path: str | Path | None = None, **overrides: Any) -> ServiceSettings:
    """Read the YAML file (if any), apply overrides, then the environment; errors name the key."""
    data = read_yaml_settings(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build_settings(ServiceSettings, data, what="service settings", path=path)
