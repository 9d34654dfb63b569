"""The device judges itself: drift of every closed window against a reference, with no network needed.

Three small parts, wired by :class:`Judge` (the runner builds it from ``settings.judge``):

- :class:`ReferenceSource`: references by (model, version): from files (devices that never reach the
  service), from the service (``GET /v1/models/{m}/versions/{v}/reference``, polled with its ETag,
  a 304 costs no body), and the last fetched one kept on disk under ``<spool>/references``, so a
  restart without network still judges;
- the evaluation: :func:`driftline.stats.compare_profiles` with the service's decision rule
  (``JudgeSettings.drift_config`` builds the same :class:`~driftline.stats.DriftConfig` as the
  service's evaluator), on each closed window and on a rolling merge of the last few;
- :class:`ActionRunner`: when dataset drift has lasted ``persist_seconds`` of window time, POST the
  verdict to a local URL or run a command; at most once per ``cooldown_seconds`` per model version,
  on one worker thread, every outcome counted.

The newest results are a frozen snapshot, replaced whole after each evaluation; ``/metrics``
(:class:`JudgeCollector`) and ``/v1/drift`` read it at request time and never compute.
Nothing here imports scipy, pandas or FastAPI (``tests/test_sidecar_footprint.py``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import queue
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from driftline.errors import DriftlineError, WireFormatError
from driftline.profile import StreamKey, WindowProfile
from driftline.reconstruction import ReconstructionModel
from driftline.stats import compare_profiles
from driftline.stats.report import DriftReport
from driftline.wire import decode_envelope, read_profile_file

from .fsutil import atomic_write
from .settings import JudgeSettings, SidecarSettings

__all__ = ["FETCH_RESULTS", "ACTION_RESULTS", "ActionRunner", "Judge", "JudgeCollector", "Reference",
           "ReferenceSource", "StreamState", "small_verdict"]

log = logging.getLogger("driftline.sidecar.judge")

FETCH_RESULTS = ("ok", "not_modified", "not_found", "error")
ACTION_RESULTS = ("ok", "error", "dropped")
Key = tuple[str, str]  # (model, version)


@dataclass(frozen=True)
class Reference:
    """One reference in use: the profile, its ETag (the service's, or ``file:<hash>``) and where it came from."""

    model: str
    version: str
    profile: WindowProfile
    etag: str
    source: str  # "service" | "file"
    loaded_at: float


def _cache_name(key: Key) -> str:
    return hashlib.blake2b("\0".join(key).encode(), digest_size=12).hexdigest()


def _decode(data: bytes, limit: int) -> WindowProfile:
    from driftline.profile import merge_all

    env = decode_envelope(data, max_bytes=limit, instant_ok=True)
    if not env.profiles:
        raise WireFormatError("the reference holds no profile")
    return merge_all(env.profiles) if len(env.profiles) > 1 else env.profiles[0]


class ReferenceSource:
    """References by (model, version): files first, then fetched ones (kept on disk), polled with ETags."""

    def __init__(self, js: JudgeSettings, cache_dir: Path | None, *, service_url: str | None = None,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.js = js
        self.cache_dir = cache_dir
        self.service_url = service_url.rstrip("/").removesuffix("/v1/ingest") if service_url else None
        self.token = token
        self.ssl_context = ssl_context
        self.clock = clock
        self.fetches: collections.Counter[str] = collections.Counter({r: 0 for r in FETCH_RESULTS})
        self.last_error: str | None = None
        self._refs: dict[Key, Reference] = {}
        self._wanted: set[Key] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pinned: set[Key] = set()  # keys whose reference comes from a file: never fetched
        self._models: dict[Key, tuple[str, ReconstructionModel | None]] = {}  # key -> (etag, decoded model)
        for path in js.reference_files:
            prof = read_profile_file(path, max_bytes=int(js.max_reference_bytes))
            key = (prof.key.model, prof.key.model_version)
            digest = hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
            self._refs[key] = Reference(*key, prof, f"file:{digest}", "file", clock())
            self._pinned.add(key)
        self._load_cache()

    # ---- disk ----------------------------------------------------------------------------------
    def _load_cache(self) -> None:
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return
        for meta_path in sorted(self.cache_dir.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
                key = (str(meta["model"]), str(meta["version"]))
                data = meta_path.with_suffix(".dlp").read_bytes()
                prof = _decode(data, int(self.js.max_reference_bytes))
            except (OSError, ValueError, KeyError, TypeError, DriftlineError) as exc:
                log.warning("ignoring the unreadable cached reference %s: %s", meta_path.name, exc)
                continue
            if key not in self._pinned and len(self._refs) < self.js.max_streams:
                self._refs[key] = Reference(*key, prof, str(meta["etag"]), "service", float(meta.get("fetched_at", 0)))
                self._wanted.add(key)

    def _save(self, key: Key, data: bytes, etag: str, now: float) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            name = _cache_name(key)
            atomic_write(self.cache_dir, self.cache_dir, name + ".dlp", data)
            meta = {"model": key[0], "version": key[1], "etag": etag, "fetched_at": now}
            atomic_write(self.cache_dir, self.cache_dir, name + ".json", json.dumps(meta).encode())
        except OSError as exc:  # a full disk: keep judging with the one in memory
            log.warning("cannot keep the reference of %s on disk: %s", key, exc)

    # ---- reading -------------------------------------------------------------------------------
    def get(self, key: Key) -> Reference | None:
        with self._lock:
            return self._refs.get(key)

    def all(self) -> list[Reference]:
        with self._lock:
            return list(self._refs.values())

    def want(self, key: Key) -> None:
        """Ask for the reference of ``key`` (a stream just seen); fetched soon, then polled."""
        if self.service_url is None or key in self._pinned:
            return
        with self._lock:
            if key in self._wanted or len(self._wanted | set(self._refs)) >= self.js.max_streams:
                return
            self._wanted.add(key)
        self._wake.set()

    def reconstruction(self, stream: StreamKey) -> ReconstructionModel | None:
        """The reconstruction model the reference of ``stream`` carries (decoded once per ETag); never raises.

        The folder calls it for every batch it folds, so the per-row errors follow the reference in
        use: a new reference (new ETag) brings its new model, whose digest tags the window's errors.
        """
        key = (stream.model, stream.model_version)
        ref = self.get(key)
        if ref is None:
            self.want(key)
            return None
        cached = self._models.get(key)
        if cached is not None and cached[0] == ref.etag:
            return cached[1]
        model = None
        sk = ref.profile.reconstruction
        if sk is not None and sk.model is not None:
            try:
                model = sk.decoded_model()
            except DriftlineError as exc:
                log.warning("the reference of %s carries an unusable reconstruction model: %s", key, exc)
        self._models[key] = (ref.etag, model)
        return model

    # ---- fetching ------------------------------------------------------------------------------
    def fetch(self, key: Key) -> str:
        """One conditional GET; returns its result (one of :data:`FETCH_RESULTS`), never raises."""
        assert self.service_url is not None
        url = (f"{self.service_url}/v1/models/{quote(key[0], safe='')}/versions/"
               f"{quote(key[1], safe='')}/reference")
        headers = {"User-Agent": "driftline-sidecar", "Accept": "application/octet-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        have = self.get(key)
        if have is not None:
            headers["If-None-Match"] = have.etag
        limit = int(self.js.max_reference_bytes)
        result = "error"
        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(req, timeout=self.js.timeout_seconds, context=self.ssl_context) as resp:
                data = resp.read(limit + 1)
                etag = resp.headers.get("ETag") or '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
            if len(data) > limit:
                raise WireFormatError(f"the reference is over max_reference_bytes={limit}")
            prof = _decode(data, limit)
            now = self.clock()
            with self._lock:
                self._refs[key] = Reference(*key, prof, etag[:128], "service", now)
            self._save(key, data, etag[:128], now)
            result, self.last_error = "ok", None
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                result, self.last_error = "not_modified", None
            elif exc.code == 404:
                result = "not_found"  # keep the one we have: the service may only have lost it for now
            else:
                self.last_error = f"HTTP {exc.code} from {url}"
        except (OSError, ValueError, DriftlineError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        self.fetches[result] += 1
        return result

    def _loop(self) -> None:
        due: dict[Key, float] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                wanted = sorted(self._wanted)
            for key in wanted:
                if self._stop.is_set():
                    return
                if due.get(key, 0.0) <= now:
                    res = self.fetch(key)
                    # a failed fetch is retried sooner than the poll interval, but not in a tight loop
                    wait = self.js.poll_seconds if res in ("ok", "not_modified") else min(self.js.poll_seconds, 30.0)
                    due[key] = time.monotonic() + wait
            nxt = min(due.values(), default=now + self.js.poll_seconds) - time.monotonic()
            self._wake.wait(max(0.05, nxt))
            self._wake.clear()

    def start(self) -> None:
        if self.service_url is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="driftline-judge-refs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.js.timeout_seconds + 1)


class ActionRunner:
    """Runs the local action on one worker thread: POST JSON to ``action_url`` or run ``action_command``."""

    def __init__(self, js: JudgeSettings) -> None:
        self.js = js
        self.results: collections.Counter[str] = collections.Counter({r: 0 for r in ACTION_RESULTS})
        self.last_error: str | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None

    @property
    def configured(self) -> bool:
        return bool(self.js.action_url or self.js.action_command)

    def submit(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.results["dropped"] += 1

    def run_one(self, payload: dict[str, Any]) -> bool:
        """Run the action once, synchronously; counts and returns whether it succeeded."""
        body = json.dumps(payload).encode()
        try:
            if self.js.action_url:
                req = urllib.request.Request(self.js.action_url, data=body, method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "User-Agent": "driftline-sidecar"})
                with urllib.request.urlopen(req, timeout=self.js.action_timeout_seconds) as resp:
                    resp.read(65536)
            if self.js.action_command:
                done = subprocess.run(self.js.action_command, input=body, capture_output=True,
                                      timeout=self.js.action_timeout_seconds, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"exit status {done.returncode}: {done.stderr[-200:].decode(errors='replace')}")
        except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as exc:
            self.results["error"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("the drift action failed: %s", self.last_error)
            return False
        self.results["ok"] += 1
        self.last_error = None
        return True

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.run_one(item)

    def start(self) -> None:
        if self.configured and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="driftline-judge-action", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=1.0)
            except queue.Full:
                pass
            self._thread.join(timeout=self.js.action_timeout_seconds + 1)


def small_verdict(report: DriftReport, evaluated_at: float, etag: str, max_names: int) -> dict[str, Any]:
    """The bounded verdict a window carries on the wire (``verdict`` in docs/wire-format.md)."""
    drifted = [f.name for f in report.features if f.drift_detected][:max_names]
    return {"dataset_drift": report.dataset_drift, "drift_share": round(report.drift_share, 6),
            "status": report.status, "drifted": drifted, "evaluated_at": round(evaluated_at, 3), "reference": etag}


def _finite(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _columns(items: list[Any]) -> tuple[Mapping[str, Any], ...]:
    return tuple(MappingProxyType({"name": c.name, "method": c.method, "status": c.status,
                                   "drift_detected": c.drift_detected, "p_value": _finite(c.p_value),
                                   "effect": _finite(c.effect), "threshold": _finite(c.threshold),
                                   "scores": {k: _finite(x) for k, x in c.scores.items()}}) for c in items)


@dataclass(frozen=True)
class StreamState:
    """The newest judgement of one model version; immutable, so readers need no lock."""

    model: str
    version: str
    reference: str
    reference_source: str
    window_start: float
    window_end: float
    verdict: Mapping[str, Any]
    features: tuple[Mapping[str, Any], ...]
    outputs: tuple[Mapping[str, Any], ...]
    rolling: Mapping[str, Any]
    drift_since: float | None
    persisted_seconds: float
    last_action_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version,
                "reference": {"etag": self.reference, "source": self.reference_source},
                "window": {"start": self.window_start, "end": self.window_end, **self.verdict,
                           "features": [dict(f) for f in self.features], "outputs": [dict(o) for o in self.outputs]},
                "rolling": dict(self.rolling), "drift_since": self.drift_since,
                "persisted_seconds": self.persisted_seconds, "last_action_at": self.last_action_at}


@dataclass
class _Track:
    recent: collections.deque[WindowProfile]
    drift_since: float | None = None
    last_action: float | None = None  # monotonic
    last_action_at: float | None = None  # wall clock, for people


@dataclass
class Judge:
    """Evaluates closed windows against their reference; called by the runner before a window is spooled."""

    js: JudgeSettings
    references: ReferenceSource
    actions: ActionRunner
    device: str = ""
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    evaluations: collections.Counter[str] = field(default_factory=lambda: collections.Counter(
        {"window": 0, "rolling": 0, "no_reference": 0, "error": 0}))
    state_dir: Path | None = None  # where the last action time per model version survives a restart
    _tracks: dict[Key, _Track] = field(default_factory=dict)
    _snapshot: Mapping[Key, StreamState] = field(default_factory=lambda: MappingProxyType({}))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, s: SidecarSettings) -> Judge:
        js = s.judge
        url = js.service_url
        token = js.token.get_secret_value() if js.token else None
        ctx = None
        if url is None and s.transport.kind == "http":
            url = s.transport.http.url
            token = token or (s.transport.http.token.get_secret_value() if s.transport.http.token else None)
        if url is not None and urlsplit(url).scheme == "https":
            http = s.transport.http
            ctx = ssl.create_default_context(cafile=str(http.ca_file) if http.ca_file else None)
            if not http.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        refs = ReferenceSource(js, Path(s.spool.path) / "references", service_url=url, token=token, ssl_context=ctx)
        if s.model and s.model_version:
            refs.want((s.model, s.model_version))
        return cls(js, refs, ActionRunner(js), device=s.device, state_dir=Path(s.spool.path) / "references")

    # ---- the cooldown survives a restart: a crash-looping device does not repeat its action ------
    def _actions_file(self) -> Path | None:
        return self.state_dir / "actions.json" if self.state_dir is not None else None

    def _last_action(self, key: Key) -> tuple[float | None, float | None]:
        """(monotonic, wall) time of the last action for ``key``, from a previous run if this one has none."""
        path = self._actions_file()
        if path is None or not path.is_file():
            return None, None
        try:
            wall = float(json.loads(path.read_text()).get("\0".join(key)))
        except (OSError, ValueError, TypeError, AttributeError):
            return None, None
        return self.monotonic() - max(0.0, self.clock() - wall), wall

    def _save_action(self, key: Key, wall: float) -> None:
        path = self._actions_file()
        if path is None:
            return
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
            data = {k: v for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}
            data["\0".join(key)] = wall
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path.parent, path.parent, path.name, json.dumps(dict(list(data.items())[-256:])).encode())
        except (OSError, ValueError) as exc:
            log.warning("cannot keep the drift action time on disk: %s", exc)

    def start(self) -> Judge:
        self.references.start()
        self.actions.start()
        return self

    def stop(self) -> None:
        self.references.stop()
        self.actions.stop()

    def snapshot(self) -> Mapping[Key, StreamState]:
        """The newest judgement per model version (a read-only mapping, replaced whole on change)."""
        return self._snapshot

    def judge_window(self, profile: WindowProfile) -> dict[str, Any] | None:
        """Evaluate one closed window (and the rolling merge); attach the verdict; never raises."""
        key = (profile.key.model, profile.key.model_version)
        try:
            return self._judge(key, profile)
        except Exception as exc:  # a judgement must never cost the window itself
            self.evaluations["error"] += 1
            log.warning("drift evaluation of %s failed: %s", key, exc, exc_info=True)
            return None

    def _judge(self, key: Key, profile: WindowProfile) -> dict[str, Any] | None:
        ref = self.references.get(key)
        if ref is None:
            self.references.want(key)
            self.evaluations["no_reference"] += 1
            return None
        with self._lock:
            track = self._tracks.get(key)
            if track is None:
                if len(self._tracks) >= self.js.max_streams:
                    self.evaluations["no_reference"] += 1
                    return None
                track = self._tracks[key] = _Track(collections.deque(maxlen=self.js.rolling_windows))
                track.last_action, track.last_action_at = self._last_action(key)
        cfg = self.js.drift_config(key[0])
        now = self.clock()
        report = compare_profiles(ref.profile, profile, cfg)
        self.evaluations["window"] += 1
        verdict = small_verdict(report, now, ref.etag, self.js.max_drifted_names)
        track.recent.append(profile)
        if self.js.rolling_windows > 1:
            rolling = self._rolling(ref, track, cfg, now)
        else:  # no rolling merge asked for: it is the window's verdict (half the cost per window)
            rolling = {**verdict, "windows": 1, "rows": profile.rows, "start": profile.start, "end": profile.end}
        fire: dict[str, Any] | None = None
        with self._lock:
            if report.dataset_drift:
                track.drift_since = profile.start if track.drift_since is None else track.drift_since
            else:
                track.drift_since = None
            persisted = profile.end - track.drift_since if track.drift_since is not None else 0.0
            if (track.drift_since is not None and persisted >= self.js.persist_seconds and self.actions.configured
                    and (track.last_action is None or self.monotonic() - track.last_action >= self.js.cooldown_seconds)):
                track.last_action, track.last_action_at = self.monotonic(), now
                fire = {"event": "driftline.device_drift", "device": self.device, "model": key[0],
                        "version": key[1], "drift_since": track.drift_since, "persisted_seconds": persisted,
                        "window": {"start": profile.start, "end": profile.end, **verdict}, "rolling": rolling}
            state = StreamState(key[0], key[1], ref.etag, ref.source, profile.start, profile.end,
                                MappingProxyType(dict(verdict)), _columns(report.features), _columns(report.outputs),
                                MappingProxyType(rolling), track.drift_since, persisted, track.last_action_at)
            self._snapshot = MappingProxyType({**self._snapshot, key: state})
        if fire is not None:
            self._save_action(key, now)
            self.actions.submit(fire)
        if self.js.attach_verdict:
            profile.verdict = verdict
        return verdict

    def _rolling(self, ref: Reference, track: _Track, cfg: Any, now: float) -> dict[str, Any]:
        windows = list(track.recent)
        try:
            merged = windows[0].copy()
            for w in windows[1:]:
                merged.merge_into(w)
        except DriftlineError:  # a column changed kind within the run: start the run again from this window
            track.recent = collections.deque([windows[-1]], maxlen=self.js.rolling_windows)
            merged, windows = windows[-1], windows[-1:]
        report = compare_profiles(ref.profile, merged, cfg)
        self.evaluations["rolling"] += 1
        return {**small_verdict(report, now, ref.etag, self.js.max_drifted_names), "windows": len(windows),
                "rows": merged.rows, "start": merged.start, "end": merged.end}

    def drift_body(self) -> dict[str, Any]:
        """The body of the local ``GET /v1/drift``."""
        refs = [{"model": r.model, "version": r.version, "etag": r.etag, "source": r.source, "loaded_at": r.loaded_at,
                 "rows": r.profile.rows} for r in self.references.all()]
        return {"device": self.device, "streams": [s.to_dict() for _k, s in sorted(self.snapshot().items())],
                "references": sorted(refs, key=lambda r: (r["model"], r["version"])),
                "fetches": dict(self.references.fetches), "fetch_error": self.references.last_error,
                "evaluations": dict(self.evaluations), "actions": dict(self.actions.results),
                "action_error": self.actions.last_error}


class JudgeCollector(Collector):
    """``driftline_sidecar_*drift*`` families from the judge's frozen snapshot, built on each scrape."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge

    def collect(self) -> Iterator[Metric]:
        snap = self.judge.snapshot()
        score = GaugeMetricFamily("driftline_sidecar_feature_drift_score", "Drift score of a feature in the newest "
                                  "closed window, by method (judged on the device)",
                                  labels=["model", "version", "feature", "method"])
        det = GaugeMetricFamily("driftline_sidecar_feature_drift_detected", "1 when the device flags a feature",
                                labels=["model", "version", "feature"])
        shift = GaugeMetricFamily("driftline_sidecar_prediction_shift_score", "Shift score of a model output in the "
                                  "newest closed window, by method", labels=["model", "version", "output", "method"])
        shift_d = GaugeMetricFamily("driftline_sidecar_prediction_shift_detected", "1 when the device flags an output",
                                    labels=["model", "version", "output"])
        share = GaugeMetricFamily("driftline_sidecar_dataset_drift_share", "Share of features flagged in the newest "
                                  "closed window", labels=["model", "version"])
        dataset = GaugeMetricFamily("driftline_sidecar_dataset_drift", "1 when the newest closed window drifts "
                                    "(the service's decision rule)", labels=["model", "version"])
        rolling = GaugeMetricFamily("driftline_sidecar_rolling_dataset_drift", "1 when the merge of the recent "
                                    "windows drifts", labels=["model", "version"])
        persisted = GaugeMetricFamily("driftline_sidecar_drift_persisted_seconds", "Window time dataset drift has "
                                      "lasted (0 when none)", labels=["model", "version"])
        ref = GaugeMetricFamily("driftline_sidecar_reference_info", "The reference the device judges against",
                                labels=["model", "version", "source"])
        for (m, v), st in sorted(snap.items()):
            for f in st.features:
                for meth, val in f["scores"].items():
                    if val is not None:
                        score.add_metric([m, v, f["name"], meth], float(val))
                det.add_metric([m, v, f["name"]], 1.0 if f["drift_detected"] else 0.0)
            for o in st.outputs:
                for meth, val in o["scores"].items():
                    if val is not None:
                        shift.add_metric([m, v, o["name"], meth], float(val))
                shift_d.add_metric([m, v, o["name"]], 1.0 if o["drift_detected"] else 0.0)
            share.add_metric([m, v], float(st.verdict["drift_share"]))
            dataset.add_metric([m, v], 1.0 if st.verdict["dataset_drift"] else 0.0)
            rolling.add_metric([m, v], 1.0 if st.rolling["dataset_drift"] else 0.0)
            persisted.add_metric([m, v], st.persisted_seconds)
        for r in self.judge.references.all():
            ref.add_metric([r.model, r.version, r.source], 1.0)
        yield from (score, det, shift, shift_d, share, dataset, rolling, persisted, ref)
        ev = CounterMetricFamily("driftline_sidecar_drift_evaluations", "Drift evaluations on the device",
                                 labels=["result"])
        for result, n in sorted(self.judge.evaluations.items()):
            ev.add_metric([result], n)
        yield ev
        fetch = CounterMetricFamily("driftline_sidecar_reference_fetches", "Reference fetches from the service",
                                    labels=["result"])
        for result in FETCH_RESULTS:
            fetch.add_metric([result], self.judge.references.fetches[result])
        yield fetch
        act = CounterMetricFamily("driftline_sidecar_drift_actions", "Local drift actions run", labels=["result"])
        for result in ACTION_RESULTS:
            act.add_metric([result], self.judge.actions.results[result])
        yield act
