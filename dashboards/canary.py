"""Canary: the verdict, every comparison's effect and always-valid p-value over time, rows per arm."""

from __future__ import annotations

from .common import (
    MODEL_UID,
    Board,
    alert_steps,
    link,
    mapping,
    prom,
    stat_panel,
    steps,
    table_panel,
    timeline_panel,
    ts_panel,
)
from .thresholds import CANARY_ALPHA

__all__ = ["build"]

ARMS = "model, baseline_version, canary_version"
STATE = 'driftline_canary_verdict{{model="$model",driftline_canary_verdict="{}"}}'
# continue = 0, promote = 1, rollback = 2: one number per experiment, so one colour per verdict.
VERDICT = (f"max by ({ARMS}) ({STATE.format('promote')}) "
           f"+ 2 * max by ({ARMS}) ({STATE.format('rollback')})")
VERDICTS = mapping({"0": ("continue", "blue"), "1": ("promote", "green"), "2": ("rollback", "red")})


def build() -> Board:
    b = Board("driftline-canary", "Driftline / Canary",
              "A/B canary between two model versions: the sequential verdict, each guardrail's effect and "
              "always-valid p-value, rows per arm.")
    b.variable("model", "Model", "label_values(driftline_canary_verdict, model)")
    b.links(link("Canary JSON (reasons)", "${service_url}/v1/models/${model}/canary", new_tab=True),
            link("Status page", "${service_url}/models/${model}", new_tab=True),
            link("Model detail", f"/d/{MODEL_UID}/driftline-model-detail?var-model=${{model}}"))

    b.row("Verdict")
    b.add(stat_panel("Verdict", prom(VERDICT, "{{baseline_version}} -> {{canary_version}}", instant=True),
                     unit="none", maps=VERDICTS,
                     desc="continue (not enough evidence yet), promote, or rollback (a guardrail is breached "
                          "with confidence). The same verdict drives the Flagger and Argo Rollouts gates."), 6, 5)
    b.add(stat_panel("Rollback", prom(f"max({STATE.format('rollback')})", instant=True), unit="none",
                     th=alert_steps("DriftlineCanaryRollback"), maps=mapping({"0": ("no", "green"),
                                                                             "1": ("ROLL BACK", "red")}),
                     desc="1 when the verdict is rollback; held for 1 minute it fires DriftlineCanaryRollback."), 6, 5)
    b.add(stat_panel("Rows per arm", prom('driftline_canary_rows{model="$model"}', "{{arm}}", instant=True),
                     unit="none", desc="Rows compared in each arm over the same windows."), 12, 5)
    b.add(timeline_panel("Verdict over time", prom(VERDICT, "{{baseline_version}} -> {{canary_version}}"),
                         maps=VERDICTS, desc="How the verdict changed as evidence accumulated."), 24, 4)

    b.row("Comparisons")
    b.add(table_panel("Comparisons now",
                      prom('driftline_canary_effect{model="$model"}', instant=True, table_format=True, ref="A"),
                      prom('driftline_canary_p_value{model="$model"}', instant=True, table_format=True, ref="B"),
                      desc="Effect (canary minus baseline; latency as a ratio - 1) and always-valid p-value of "
                           "every guardrail comparison. The reasons are in the canary JSON (dashboard link)."),
          24, 8)
    b.add(ts_panel("Effects over time", prom('driftline_canary_effect{model="$model"}', "{{metric}}"), unit="none",
                   desc="Canary minus baseline per comparison; latency comparisons as ratio - 1."), 12, 9)
    b.add(ts_panel("Always-valid p-values", prom('driftline_canary_p_value{model="$model"}', "{{metric}}"),
                   unit="none", th=steps((None, "red"), (CANARY_ALPHA, "green")),
                   desc=f"Valid under continuous monitoring (mixture SPRT); below the experiment's alpha "
                        f"(default {CANARY_ALPHA:g}, split over the guardrails) a difference is confident."), 12, 9)
    b.add(ts_panel("Rows per arm over time", prom('driftline_canary_rows{model="$model"}', "{{arm}}"), unit="none",
                   desc="The verdict may move past continue only after min_rows and min_duration."), 24, 6)
    return b
