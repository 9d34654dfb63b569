package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/argoproj/argo-rollouts/analysis"
	"github.com/argoproj/argo-rollouts/controller/metrics"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/pkg/client/clientset/versioned/fake"
	informers "github.com/argoproj/argo-rollouts/pkg/client/informers/externalversions"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"
	"github.com/argoproj/argo-rollouts/utils/queue"
	"github.com/argoproj/argo-rollouts/utils/record"
	log "github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/yaml"
)

type measurement struct {
	Phase string `json:"phase"`
	Value string `json:"value"`
}

type argoOutcome struct {
	Controller   string        `json:"controller"`
	Phase        string        `json:"phase"`
	Message      string        `json:"message"`
	Measurements []measurement `json:"measurements"`
	Calls        int64         `json:"calls"`
	// Promoted: what the rollout controller does with this phase at an analysis step
	// (Successful: go on to the next step; Failed/Error: abort; Inconclusive: pause).
	Promoted bool `json:"promoted"`
	Aborted  bool `json:"aborted"`
	Paused   bool `json:"paused"`
}

func runArgo(file, base, model, interval string, maxIntervals int, args kv, p *proxy) argoOutcome {
	log.SetLevel(log.WarnLevel)
	var tmpl *v1alpha1.AnalysisTemplate
	for _, d := range yamlDocs(file) {
		t := &v1alpha1.AnalysisTemplate{}
		if err := yaml.UnmarshalStrict([]byte(d), t); err == nil && t.Kind == "AnalysisTemplate" {
			tmpl = t
			break
		} else if strings.Contains(d, "kind: AnalysisTemplate") {
			must(fmt.Errorf("the AnalysisTemplate in %s does not parse: %v", file, err))
		}
	}
	if tmpl == nil {
		must(fmt.Errorf("no AnalysisTemplate in %s", file))
	}
	for i := range tmpl.Spec.Metrics {
		m := &tmpl.Spec.Metrics[i]
		m.Interval = v1alpha1.DurationString(interval)
		if m.Provider.Web != nil {
			m.Provider.Web.URL = rebase(m.Provider.Web.URL, base, model)
		}
	}
	var runArgs []v1alpha1.Argument
	for k, v := range args {
		val := v
		runArgs = append(runArgs, v1alpha1.Argument{Name: k, Value: &val})
	}
	// the helper the rollout controller uses to turn templates and step args into a run
	run, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{tmpl}, nil, runArgs, nil, nil,
		nil, nil, "", "driftline-canary-run", tmpl.Namespace)
	must(err)
	run.Name = "driftline-canary-run"

	client := fake.NewSimpleClientset()
	kube := k8sfake.NewSimpleClientset()
	inf := informers.NewSharedInformerFactory(client, 0)
	kinf := kubeinformers.NewSharedInformerFactory(kube, 0)
	ctl := analysis.NewController(analysis.ControllerConfig{
		KubeClientSet:        kube,
		ArgoProjClientset:    client,
		AnalysisRunInformer:  inf.Argoproj().V1alpha1().AnalysisRuns(),
		JobInformer:          kinf.Batch().V1().Jobs(),
		JobPodsInformer:      kinf.Core().V1().Pods(),
		ResyncPeriod:         0,
		AnalysisRunWorkQueue: workqueue.NewNamedRateLimitingQueue(queue.DefaultArgoRolloutsRateLimiter(), "AnalysisRuns"),
		MetricsServer: metrics.NewMetricsServer(metrics.ServerConfig{
			Addr: "127.0.0.1:0", K8SRequestProvider: &metrics.K8sRequestsCountProvider{}}),
		Recorder: record.NewFakeEventRecorder(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inf.Start(ctx.Done())
	kinf.Start(ctx.Done())
	go ctl.Run(ctx, 1) //nolint:errcheck
	_, err = client.ArgoprojV1alpha1().AnalysisRuns(run.Namespace).Create(ctx, run, metav1.CreateOptions{})
	must(err)

	step, err := time.ParseDuration(interval)
	must(err)
	deadline := time.Now().Add(time.Duration(maxIntervals+5) * (step + 2*time.Second))
	for {
		cur, err := client.ArgoprojV1alpha1().AnalysisRuns(run.Namespace).Get(ctx, run.Name, metav1.GetOptions{})
		must(err)
		if cur.Status.Phase.Completed() || time.Now().After(deadline) {
			out := argoOutcome{Controller: "argo-rollouts", Phase: string(cur.Status.Phase), Message: cur.Status.Message,
				Calls: p.calls.Load()}
			for _, mr := range cur.Status.MetricResults {
				for _, m := range mr.Measurements {
					out.Measurements = append(out.Measurements, measurement{string(m.Phase), m.Value})
				}
			}
			ph := cur.Status.Phase
			out.Promoted = ph == v1alpha1.AnalysisPhaseSuccessful
			out.Aborted = ph == v1alpha1.AnalysisPhaseFailed || ph == v1alpha1.AnalysisPhaseError
			out.Paused = ph == v1alpha1.AnalysisPhaseInconclusive
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}
