package main

import (
	"fmt"
	"strings"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/controller"
	"sigs.k8s.io/yaml"
)

type hookCall struct {
	Interval int    `json:"interval"`
	Type     string `json:"type"`
	Phase    string `json:"phase"`
	OK       bool   `json:"ok"`
}

type flaggerOutcome struct {
	Controller   string     `json:"controller"`
	Phase        string     `json:"phase"`
	Promoted     bool       `json:"promoted"`
	RolledBack   bool       `json:"rolled_back"`
	Intervals    int        `json:"intervals"`
	FailedChecks int        `json:"failed_checks"`
	Weight       int        `json:"weight"`
	Hooks        []hookCall `json:"hooks"`
	Calls        int64      `json:"calls"`
}

// flaggerRun follows Flagger's scheduler for a progressive-traffic canary (no service mesh, no
// metrics: the webhooks are the analysis), in the order of advanceCanary in
// pkg/controller/scheduler.go at v1.41.0, with each hook run as scheduler_hooks.go runs it.
type flaggerRun struct {
	cd       *flaggerv1.Canary
	interval int
	out      *flaggerOutcome
}

func (f *flaggerRun) call(w flaggerv1.CanaryWebhook, phase flaggerv1.CanaryPhase) bool {
	err := controller.CallWebhook(*f.cd, phase, w) // Flagger's own call: payload, checksum, retries, status codes
	f.out.Hooks = append(f.out.Hooks, hookCall{f.interval, string(w.Type), string(phase), err == nil})
	return err == nil
}

// hooks runs every webhook of one type; all must pass (pre-rollout, rollout, confirm-promotion).
func (f *flaggerRun) hooks(t flaggerv1.HookType, phase flaggerv1.CanaryPhase) bool {
	for _, w := range f.cd.GetAnalysis().Webhooks {
		if w.Type == t || (t == flaggerv1.RolloutHook && w.Type == "") {
			if !f.call(w, phase) {
				return false
			}
		}
	}
	return true
}

// rollbackHooks: any rollback webhook that answers 2xx asks for a rollback (runRollbackHooks).
func (f *flaggerRun) rollbackHooks(phase flaggerv1.CanaryPhase) bool {
	for _, w := range f.cd.GetAnalysis().Webhooks {
		if w.Type == flaggerv1.RollbackHook && f.call(w, phase) {
			return true
		}
	}
	return false
}

func runFlagger(file, base, model, interval string, maxIntervals int, checksum string, p *proxy) flaggerOutcome {
	var cd *flaggerv1.Canary
	for _, d := range yamlDocs(file) {
		if !strings.Contains(d, "kind: Canary") {
			continue
		}
		c := &flaggerv1.Canary{}
		must(yaml.UnmarshalStrict([]byte(d), c))
		cd = c
	}
	if cd == nil {
		must(fmt.Errorf("no Canary in %s", file))
	}
	an := cd.GetAnalysis()
	an.Interval = interval
	for i := range an.Webhooks {
		an.Webhooks[i].URL = rebase(an.Webhooks[i].URL, base, model)
	}
	// a new revision was detected: Flagger records its spec hash, which the webhook checksum covers
	cd.Status.LastAppliedSpec = checksum
	cd.Status.Phase = flaggerv1.CanaryPhaseProgressing
	step, err := time.ParseDuration(interval)
	must(err)
	maxWeight := an.MaxWeight
	if maxWeight == 0 {
		maxWeight = 100
	}
	threshold := cd.GetAnalysisThreshold()
	out := &flaggerOutcome{Controller: "flagger"}
	f := &flaggerRun{cd: cd, out: out}
	weight, failed := 0, 0
	phase := func() flaggerv1.CanaryPhase { return cd.Status.Phase }
	setPhase := func(ph flaggerv1.CanaryPhase) { cd.Status.Phase = ph }
	for f.interval = 1; f.interval <= maxIntervals; f.interval++ {
		if f.interval > 1 {
			time.Sleep(step)
		}
		ph := phase()
		// "check if we should rollback"
		if ph == flaggerv1.CanaryPhaseProgressing || ph == flaggerv1.CanaryPhaseWaiting ||
			ph == flaggerv1.CanaryPhaseWaitingPromotion {
			if f.rollbackHooks(ph) {
				weight = 0
				setPhase(flaggerv1.CanaryPhaseFailed)
				break
			}
		}
		// "route traffic back to primary if analysis has succeeded" (stepWeightPromotion 0: at once)
		if ph == flaggerv1.CanaryPhasePromoting {
			weight = 0
			setPhase(flaggerv1.CanaryPhaseFinalising)
			continue
		}
		// "scale canary to zero if promotion has finished"
		if ph == flaggerv1.CanaryPhaseFinalising {
			setPhase(flaggerv1.CanaryPhaseSucceeded)
			f.hooks(flaggerv1.PostRolloutHook, flaggerv1.CanaryPhaseSucceeded)
			break
		}
		// "check if the number of failed checks reached the threshold"
		if (ph == flaggerv1.CanaryPhaseProgressing || ph == flaggerv1.CanaryPhaseWaitingPromotion) && failed >= threshold {
			weight = 0
			setPhase(flaggerv1.CanaryPhaseFailed)
			f.hooks(flaggerv1.PostRolloutHook, flaggerv1.CanaryPhaseFailed)
			break
		}
		if weight == 0 && cd.Status.Iterations == 0 {
			if !f.hooks(flaggerv1.PreRolloutHook, flaggerv1.CanaryPhaseProgressing) {
				failed++
				continue
			}
		} else if !f.hooks(flaggerv1.RolloutHook, flaggerv1.CanaryPhaseProgressing) { // runAnalysis
			failed++
			continue
		}
		// strategy: canary progressive traffic increase (runCanary)
		if weight < maxWeight {
			if !f.hooks(flaggerv1.ConfirmTrafficIncreaseHook, flaggerv1.CanaryPhaseProgressing) {
				continue
			}
			weight = min(weight+an.StepWeight, 100)
			continue
		}
		// "promote canary - max weight reached": check the promotion gate
		if !f.hooks(flaggerv1.ConfirmPromotionHook, flaggerv1.CanaryPhaseProgressing) {
			setPhase(flaggerv1.CanaryPhaseWaitingPromotion)
			continue
		}
		setPhase(flaggerv1.CanaryPhasePromoting)
	}
	out.Phase = string(phase())
	out.Promoted = phase() == flaggerv1.CanaryPhaseSucceeded
	out.RolledBack = phase() == flaggerv1.CanaryPhaseFailed
	out.Intervals = min(f.interval, maxIntervals)
	out.FailedChecks = failed
	out.Weight = weight
	out.Calls = p.calls.Load()
	return *out
}
