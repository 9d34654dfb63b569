"""What a :class:`~driftline.edge_sidecar.monitor.Monitor` is built from: one frozen, typed value.

Everything that configures a monitor lives here, so a monitor's setup can be printed, compared,
copied with :func:`dataclasses.replace` and built from the sidecar's settings in one place. What a
monitor talks to (its sink, its clock) is passed to the monitor itself, not stored here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from driftline.profile import ProfileConfig

from .streams import StreamDefaults
from .transport import check_url

__all__ = ["MonitorConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorConfig:
    """A monitor's configuration; every field has a default, so ``MonitorConfig(model="fraud")`` is enough.

    Sequences are stored as tuples and ``cohort`` as a read-only mapping, so a config never changes
    after it was made. A ``service_url`` no transport can use raises ``SettingsError`` here.
    """

    # default labels of a row that does not carry its own
    model: str | None = None
    model_version: str | None = None
    variant: str = "default"
    device: str = ""
    cohort: Mapping[str, str] = field(default_factory=dict)
    # windows: length, size bound, lateness allowance, how often the background thread folds and closes
    window_seconds: float = 60.0
    max_rows: int = 1_000_000
    lateness_seconds: float = 10.0
    tick_seconds: float = 0.25
    profile: ProfileConfig | None = None
    # sampling (row counters stay exact): rate in (0, 1], "request_id" or "random", seed
    sampling_rate: float = 1.0
    sampling_mode: str = "request_id"
    sampling_seed: int = 0
    # names for array input, and bounds on what one monitor keeps
    feature_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    allowed_models: Sequence[str] = ()
    max_streams: int = 1000
    max_features: int = 2000
    max_cohort_labels: int = 8
    # strict (tests): raise ObserveError instead of counting; background: fold in a thread after start()
    strict: bool = False
    background: bool = True
    buffer_rows: int = 4096
    max_buffer_rows: int = 100_000
    # delivery from this process (see driftline.edge_sidecar.embedded), used when no sink is given
    service_url: str | None = None
    token: str | None = field(default=None, repr=False)
    spool_dir: str | None = None
    spool_max_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 2.0
    # delayed labels (see driftline.edge_sidecar.labels): off unless ``labels``; rows with a request_id
    # are remembered with the output named ``label_output`` as their score
    labels: bool = False
    label_output: str = "prediction"
    label_task: str = "binary"
    label_threshold: float = 0.5
    label_horizon_seconds: float = 3600.0
    label_max_pending: int = 100_000
    label_flush_seconds: float = 10.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "cohort", MappingProxyType(dict(self.cohort or {})))
        set_(self, "allowed_models", tuple(self.allowed_models))
        if self.feature_names is not None:
            set_(self, "feature_names", tuple(self.feature_names))
        if self.output_names is not None:
            set_(self, "output_names", tuple(self.output_names))
        if self.service_url is not None:
            check_url(self.service_url)  # a URL no transport can use is refused here, not at start()

    @property
    def stream_defaults(self) -> StreamDefaults:
        """The labels a row gets when it does not say."""
        return StreamDefaults(self.model, self.model_version, self.variant, self.device, self.cohort)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> MonitorConfig:
        """From :class:`~driftline.edge_sidecar.settings.SidecarSettings` (``overrides`` win)."""
        s = settings
        profile = ProfileConfig(kll_k=s.profile.kll_k, fi_lg_max_k=s.profile.fi_lg_max_k,
                                hll_lg_k=s.profile.hll_lg_k, categorical=frozenset(s.profile.categorical),
                                numeric=frozenset(s.profile.numeric), reservoir_size=s.profile.reservoir_size)
        args: dict[str, Any] = dict(
            model=s.model, model_version=s.model_version, variant=s.variant, device=s.device, cohort=s.cohort,
            profile=profile, window_seconds=s.window.seconds, max_rows=s.window.max_rows,
            lateness_seconds=s.window.lateness_seconds, tick_seconds=s.window.tick_seconds,
            sampling_rate=s.sampling.rate, sampling_mode=s.sampling.mode, sampling_seed=s.sampling.seed,
            allowed_models=s.models, max_streams=s.max_streams, max_features=s.max_features,
            max_cohort_labels=s.max_cohort_labels,
        )
        lab = s.labels
        args.update(labels=lab.enabled, label_output=lab.output, label_task=lab.task, label_threshold=lab.threshold,
                    label_horizon_seconds=lab.horizon_seconds, label_max_pending=lab.max_pending,
                    label_flush_seconds=lab.flush_seconds)
        args.update(overrides)
        return cls(**args)
