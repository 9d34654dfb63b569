"""Shadow: whether a shadow model is ready to promote, from paired answers to the same live requests.

The sidecar mirrors each served call to the shadow and pairs the two answers on the spot; the service
merges the paired summaries and judges them with always-valid tests (statistics.md "Shadow models").
This board shows that verdict and what drives it: label agreement, the paired score difference, each
side's error ratio and latency p99, and how many requests were paired or dropped.
"""

from __future__ import annotations

from .common import MODEL_UID, Board, alert_steps, link, mapping, prom, stat_panel, timeline_panel, ts_panel

__all__ = ["build"]

STATE = 'driftline_shadow_verdict{{model="$model",verdict="{}"}}'
# undecided = 0, ready = 1, worse = 2: one number per model, so one colour per verdict.
VERDICT = f"max by (model) ({STATE.format('ready')}) + 2 * max by (model) ({STATE.format('worse')})"
VERDICTS = mapping({"0": ("undecided", "blue"), "1": ("ready", "green"), "2": ("worse", "red")})


def build() -> Board:
    b = Board("driftline-shadow", "Driftline / Shadow",
              "A shadow model answering copies of live requests: its verdict (ready, worse, undecided) on "
              "paired evidence, label agreement, score difference, errors and latency per side.")
    b.variable("model", "Model", "label_values(driftline_shadow_verdict, model)")
    b.links(link("Shadow JSON (reasons)", "${service_url}/v1/models/${model}/shadow", new_tab=True),
            link("Status page", "${service_url}/models/${model}", new_tab=True),
            link("Model detail", f"/d/{MODEL_UID}/driftline-model-detail?var-model=${{model}}"))

    b.row("Verdict")
    b.add(stat_panel("Verdict", prom(VERDICT, instant=True), unit="none", maps=VERDICTS,
                     desc="ready (every paired comparison within its tolerance after min_pairs requests), worse "
                          "(one lies beyond its tolerance with confidence) or undecided (not enough pairs yet)."),
          6, 5)
    b.add(stat_panel("Worse", prom(f"max({STATE.format('worse')})", instant=True), unit="none",
                     th=alert_steps("DriftlineShadowWorse"), maps=mapping({"0": ("no", "green"), "1": ("WORSE", "red")}),
                     desc="1 when the verdict is worse; held for 5 minutes it fires DriftlineShadowWorse."), 6, 5)
    b.add(stat_panel("Paired requests", prom('driftline_shadow_paired_requests{model="$model"}', instant=True),
                     unit="none", desc="Requests both sides answered in the lookback (shadow.lookback_seconds)."),
          6, 5)
    b.add(stat_panel("Mirrors dropped", prom('driftline_shadow_mirrors_dropped{model="$model"}', instant=True),
                     unit="none", desc="Mirrors the sidecars dropped because their queue was full (never the "
                                       "caller's request): many means the verdict rests on a sample."), 6, 5)
    b.add(timeline_panel("Verdict over time", prom(VERDICT), maps=VERDICTS,
                         desc="How the verdict changed as paired evidence accumulated."), 24, 4)

    b.row("Paired comparisons")
    b.add(ts_panel("Label agreement", prom('driftline_shadow_agreement_ratio{model="$model"}', "agreement"),
                   unit="percentunit", desc="Share of paired rows whose predicted labels agree (shadow vs live)."),
          12, 8)
    b.add(ts_panel("Score difference", prom('driftline_shadow_score_difference_mean{model="$model"}', "mean"),
                   unit="none", desc="Mean paired score difference, shadow minus live, on the same rows."), 12, 8)
    b.add(ts_panel("Error ratio per side", prom('driftline_shadow_error_ratio{model="$model"}', "{{side}}"),
                   unit="percentunit", desc="Share of paired requests each side failed (non-200, timeout, "
                                            "unreadable answer)."), 12, 8)
    b.add(ts_panel("Latency p99 per side", prom('driftline_shadow_latency_p99_seconds{model="$model"}', "{{side}}"),
                   unit="s", desc="p99 inference latency of each side's windows (a shadow often runs on other "
                                  "hardware; tested only with latency_p99_tolerance)."), 12, 8)
    return b
