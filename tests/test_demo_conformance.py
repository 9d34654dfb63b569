"""The demo's golden-set scenario: the device whose driver quantises a pixel fails its first golden run,
every other device reproduces the cloud's outputs exactly (the demo's fleet plan, golden set, drivers
and SDK callbacks, run by the sidecar's real runner). The model is a quick stand-in fitted on the
demo's digits (Gaussian naive Bayes): the demo's logistic regressions take a minute to train on a
loaded 2-core machine, and the scenario depends only on ``predict_proba``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftline.conformance import read_golden_file

pytest.importorskip("sklearn")


def test_the_quantising_driver_fails_its_first_golden_run_and_the_others_pass(tmp_path: Path) -> None:
    from sklearn.naive_bayes import GaussianNB

    from driftline.apps.demo.fleet import plan_fleet
    from driftline.apps.demo.golden import (
        BAD_DRIVER,
        QUANTISED_PIXEL,
        apply_driver,
        build_golden,
        device_predict,
    )
    from driftline.apps.demo.model import DigitModel, load_digits_split
    from driftline.apps.demo.view import render_summary, summarise
    from driftline.edge_sidecar.golden import GoldenRunner

    x_train, y_train, x_serve, _ = load_digits_split(0)
    models = {"v1": DigitModel("v1", GaussianNB().fit(x_train, y_train))}
    golden = read_golden_file(build_golden(models["v1"], "digits-camera", x_serve, tmp_path / "g.dlg"))
    plans = plan_fleet(6, 60.0)
    assert [p.driver == BAD_DRIVER for p in plans] == [False] * 5 + [True]
    assert plans[-1].camera_change_at is None and plans[-1].cohort["driver"] == BAD_DRIVER
    first = {}
    for plan in plans:
        runner = GoldenRunner([golden], device_predict(plan.driver, models), cohort=plan.cohort)
        first[plan.device] = runner.run_one(golden, "start")
        assert runner.errors == {}
    bad = plans[-1].device
    assert [d for d, e in first.items() if not e["passed"]] == [bad]
    for d, e in first.items():
        if d != bad:
            assert e["max_abs_diff"] == 0.0 and e["mismatched_values"] == 0 and e["score_ks"] == 0.0
    # the bad device's numbers are the driver's effect, computed here without the runner
    x = golden.inputs["pixels"]
    assert not np.array_equal(apply_driver(BAD_DRIVER, x)[:, QUANTISED_PIXEL], x[:, QUANTISED_PIXEL])
    want = np.abs(models["v1"].estimator.predict_proba(apply_driver(BAD_DRIVER, x)) - golden.outputs["proba"])
    assert first[bad]["max_abs_diff"] == float(want.max()) > 1e-6
    assert first[bad]["mismatched_values"] == int(np.count_nonzero(want > 1e-6 + 1e-6 * golden.outputs["proba"]))
    assert ["driver", BAD_DRIVER] in first[bad]["cohort"]
    # what the demo's summary says about it (the service's conformance_summary shape)
    snap = {"conformance": [{"version": "v1", "devices": 6, "pass": 5, "fail": 1, "error": 0, "failing_devices": [
        {"device": bad, "result": "fail", "cohort": {"driver": BAD_DRIVER}, "max_abs_diff": first[bad]["max_abs_diff"],
         "top1_agreement": first[bad]["top1_agreement"], "trigger": "start"}]}],
        "expected_nonconforming_devices": [bad], "canary": {}, "drift": {}}
    summary = summarise(snap, {})
    assert [d["device"] for d in summary["conformance"]["failing_devices"]] == summary["conformance"]["expected_failing"]
    assert f"5 of 6 devices compute the cloud's outputs; FAILING: {bad} (driver={BAD_DRIVER}" in render_summary(summary)
