// Command k8s-validate decodes every manifest of a multi-document YAML stream strictly into the
// Kubernetes and prometheus-operator API types, so an unknown or misspelt field, a wrong type, a
// kind nobody registered or an invalid name fails here instead of on a cluster.
//
//	helm template driftline helm/driftline | k8s-validate
//
// It prints one line per document and exits 1 if any document failed.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// clusterScoped lists the registered kinds that carry no namespace.
var clusterScoped = map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true, "Namespace": true}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, networkingv1.AddToScheme,
		policyv1.AddToScheme, rbacv1.AddToScheme, monitoringv1.AddToScheme, monitoringv1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// validateMeta checks names, namespaces, labels and annotations as the API server would.
func validateMeta(obj runtime.Object, kind string) field.ErrorList {
	accessor, ok := obj.(metav1.Object)
	if !ok {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), errors.New("object has no metadata"))}
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	if kind == "Service" {
		nameFn = apivalidation.NameIsDNS1035Label
	}
	errs := apivalidation.ValidateObjectMetaAccessor(accessor, !clusterScoped[kind], nameFn, field.NewPath("metadata"))
	// pod templates: labels must be valid and the selector must find them
	var tmpl *corev1.PodTemplateSpec
	var selector *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		tmpl, selector = &o.Spec.Template, o.Spec.Selector
	case *appsv1.StatefulSet:
		tmpl, selector = &o.Spec.Template, o.Spec.Selector
	case *appsv1.DaemonSet:
		tmpl, selector = &o.Spec.Template, o.Spec.Selector
	}
	if tmpl != nil {
		p := field.NewPath("spec", "template", "metadata")
		errs = append(errs, metav1validation.ValidateLabels(tmpl.Labels, p.Child("labels"))...)
		errs = append(errs, apivalidation.ValidateAnnotations(tmpl.Annotations, p.Child("annotations"))...)
		sel, err := metav1.LabelSelectorAsSelector(selector)
		switch {
		case err != nil || selector == nil:
			errs = append(errs, field.Invalid(field.NewPath("spec", "selector"), selector, fmt.Sprint(err)))
		case sel.Empty() || !sel.Matches(labels.Set(tmpl.Labels)):
			errs = append(errs, field.Invalid(field.NewPath("spec", "selector"), selector, "does not select the pod template's labels"))
		}
	}
	return errs
}

func run(in io.Reader, out io.Writer) int {
	scheme := newScheme()
	codec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	failed, seen := 0, 0
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintf(out, "FAIL document %d: %v\n", i, err)
			return 1
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		seen++
		obj, gvk, err := codec.Decode(doc, nil, nil)
		where := fmt.Sprintf("document %d", i)
		if gvk != nil {
			where += " " + gvk.Kind
		}
		if obj != nil {
			if a, ok := obj.(metav1.Object); ok {
				where += "/" + a.GetName()
			}
		}
		if err != nil {
			failed++
			fmt.Fprintf(out, "FAIL %s: %v\n", where, err)
			continue
		}
		if errs := validateMeta(obj, gvk.Kind); len(errs) > 0 {
			failed++
			fmt.Fprintf(out, "FAIL %s: %v\n", where, errs.ToAggregate())
			continue
		}
		fmt.Fprintf(out, "ok   %s (%s)\n", where, gvk.GroupVersion())
	}
	if seen == 0 {
		fmt.Fprintln(out, "FAIL no manifests in the input")
		return 1
	}
	if failed > 0 {
		fmt.Fprintf(out, "%d of %d manifests failed\n", failed, seen)
		return 1
	}
	fmt.Fprintf(out, "%d manifests valid\n", seen)
	return 0
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func main() {
	var in io.Reader = os.Stdin
	if len(os.Args) > 1 {
		var readers []io.Reader
		for _, name := range os.Args[1:] {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			defer f.Close()
			readers = append(readers, f, strings.NewReader("\n---\n"))
		}
		in = io.MultiReader(readers...)
	}
	os.Exit(run(in, os.Stdout))
}
