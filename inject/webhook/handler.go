// Package webhook serves meshgate-inject as a mutating admission webhook.
//
// The API server sends each new Pod of a selected namespace (or with the
// annotation meshgate.io/inject: "true") to POST /mutate as an
// admission.k8s.io/v1 AdmissionReview. The handler runs the same
// transformation as the command line over the pod and answers with the
// JSONPatch from the pod it got to the pod it made, so that a pod injected at
// admission equals the same pod injected by the command line.
//
// The webhook never blocks a pod: a pod it cannot wire (an image whose
// ENTRYPOINT cannot be read in time, a pod the transformation refuses) is
// admitted unchanged, with an admission warning that names the container and
// the reason. A pod whose proxy is a native sidecar needs no gate; when a
// later webhook (the mesh's own injector) turns the proxy into a native
// sidecar, the API server calls this one again (reinvocationPolicy
// IfNeeded) and the wiring is taken out.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/meshgate/meshgate/inject"
)

// AnnotationInject opts a pod in ("true", in a namespace without the
// label) or out ("false").
const AnnotationInject = inject.AnnotationInject

// maxReview bounds the body of a review. The API server refuses objects
// over 3 MiB; an AdmissionReview of a pod holds it once (oldObject is empty
// on CREATE).
const maxReview = 8 << 20

// maxWarning keeps each admission warning short: kubectl prints them one
// per line and the API server drops very long ones.
const maxWarning = 240

// Resolver reads an image's ENTRYPOINT and CMD. It has the method set of
// inject.Resolver.
type Resolver interface {
	ImageConfig(ctx context.Context, image string) (entrypoint, cmd []string, err error)
}

// Transform is what the webhook does to a pod, given as a kyaml node of a
// whole Pod and changed in place: the inject package's Template, Uninject
// and NativeSidecar.
type Transform interface {
	// Inject wires the pod; resolver answers the entrypoints of
	// containers without a command.
	Inject(ctx context.Context, pod *yaml.RNode, jobLike bool, resolver Resolver) (changed bool, notes []string, err error)
	// Uninject takes the wiring out again.
	Uninject(pod *yaml.RNode) (changed bool, notes []string, err error)
	// NativeSidecar tells whether the pod's proxy is a native sidecar,
	// and why.
	NativeSidecar(pod *yaml.RNode) (bool, string)
}

// Lookups gives the resolver for one pod: the registry with the pod's
// imagePullSecrets.
type Lookups interface {
	For(namespace string, pullSecrets []string) Resolver
}

// Handler answers AdmissionReviews for pods on POST /mutate.
type Handler struct {
	Transform Transform
	// Lookups reads entrypoints from registries; nil leaves containers
	// without a command to the transformation's own options.
	Lookups Lookups
	// LookupTimeout bounds the registry look-ups of one admission, well
	// inside the webhook's timeoutSeconds. Zero means 2s.
	LookupTimeout time.Duration
	// Log is nil for zap.NewNop().
	Log *zap.Logger
}

func (h *Handler) log() *zap.Logger {
	if h.Log == nil {
		return zap.NewNop()
	}
	return h.Log
}

// ServeHTTP decodes one AdmissionReview and answers it. Anything that is
// not a well-formed review gets a 4xx status: the API server then applies
// the failure policy, which is Ignore in the shipped configuration.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "want Content-Type application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReview))
	if err != nil {
		http.Error(w, "read review: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "decode review: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "review has no request", http.StatusBadRequest)
		return
	}
	start := time.Now()
	resp := h.Review(r.Context(), review.Request)
	h.log().Debug("admission reviewed",
		zap.String("uid", string(review.Request.UID)),
		zap.String("namespace", review.Request.Namespace),
		zap.String("name", podName(review.Request)),
		zap.Bool("patched", resp.Patch != nil),
		zap.Duration("elapsed", time.Since(start)))
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: resp,
	})
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// podName names the pod of a request for the log: its name, or its
// generateName prefix for pods that controllers create.
func podName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	var meta struct {
		Metadata struct {
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(req.Object.Raw, &meta)
	return meta.Metadata.GenerateName
}

// Review answers one admission request. It always allows the pod; it
// patches it when the transformation changed it.
func (h *Handler) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp
	}
	log := h.log().With(zap.String("namespace", req.Namespace), zap.String("name", podName(req)))
	pod, err := yaml.Parse(string(req.Object.Raw))
	if err != nil {
		return warn(resp, fmt.Sprintf("pod not decoded: %v", err))
	}
	if v := pod.GetAnnotations()[AnnotationInject]; v == "false" {
		log.Debug("pod opted out", zap.String("annotation", AnnotationInject+"="+v))
		return resp
	}

	changed, notes, warnings := h.transform(ctx, req, pod, log)
	if len(warnings) > 0 {
		for _, w := range warnings {
			resp = warn(resp, w)
		}
		return resp
	}
	if !changed {
		log.Debug("pod unchanged", zap.Strings("notes", notes))
		return resp
	}
	patch, n, err := patchFor(req.Object.Raw, pod)
	if err != nil {
		return warn(resp, err.Error())
	}
	if n == 0 {
		return resp
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	log.Info("pod changed", zap.Int("operations", n), zap.Strings("notes", notes))
	return resp
}

// transform wires the pod, or takes the wiring out of a pod whose proxy
// is a native sidecar. When it cannot, it returns the warnings that say
// why and leaves the pod to be admitted unchanged.
func (h *Handler) transform(ctx context.Context, req *admissionv1.AdmissionRequest, pod *yaml.RNode, log *zap.Logger) (bool, []string, []string) {
	if native, why := h.Transform.NativeSidecar(pod); native {
		// Left alone, unless this is a reinvocation after a later
		// webhook made the proxy a native sidecar: then the wiring
		// this webhook added comes out.
		changed, notes, err := h.Transform.Uninject(pod)
		if err != nil {
			return false, nil, []string{fmt.Sprintf("native sidecar (%s), wiring not taken out: %v", why, err)}
		}
		log.Info("native sidecar", zap.String("reason", why), zap.Bool("unwired", changed))
		return changed, notes, nil
	}
	rec := &recorder{}
	if h.Lookups != nil {
		rec.Resolver = h.Lookups.For(req.Namespace, pullSecrets(pod))
	}
	timeout := h.LookupTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	changed, notes, err := h.Transform.Inject(lctx, pod, jobLike(pod), rec)
	if err != nil {
		log.Warn("pod admitted unchanged", zap.Error(err))
		if w := rec.warnings(pod); len(w) > 0 {
			return false, nil, w
		}
		return false, nil, []string{err.Error()}
	}
	return changed, notes, nil
}

// patchFor is the JSONPatch from the pod as it came, raw, to pod, and the
// number of its operations.
func patchFor(raw []byte, pod *yaml.RNode) ([]byte, int, error) {
	after, err := toJSON(pod)
	if err != nil {
		return nil, 0, fmt.Errorf("pod not encoded: %v", err)
	}
	ops, err := jsonpatch.CreatePatch(raw, after)
	if err != nil {
		return nil, 0, fmt.Errorf("patch not made: %v", err)
	}
	if len(ops) == 0 {
		return nil, 0, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, 0, fmt.Errorf("patch not encoded: %v", err)
	}
	return patch, len(ops), nil
}

// warn adds an admission warning, which kubectl shows to whoever created
// the pod.
func warn(resp *admissionv1.AdmissionResponse, msg string) *admissionv1.AdmissionResponse {
	msg = "meshgate: pod admitted without meshgate: " + msg
	if len(msg) > maxWarning {
		msg = msg[:maxWarning-3] + "..."
	}
	resp.Warnings = append(resp.Warnings, msg)
	return resp
}

// jobLike tells a pod that runs to completion: its proxy must be told to
// quit when the command ends.
func jobLike(pod *yaml.RNode) bool {
	switch str(pod, "spec", "restartPolicy") {
	case "Never", "OnFailure":
		return true
	}
	return false
}

// pullSecrets lists the names in the pod's imagePullSecrets. The
// ServiceAccount admission plugin has already added those of the pod's
// service account by the time webhooks run.
func pullSecrets(pod *yaml.RNode) []string {
	list, err := pod.Pipe(yaml.Lookup("spec", "imagePullSecrets"))
	if err != nil || list == nil {
		return nil
	}
	var names []string
	_ = list.VisitElements(func(e *yaml.RNode) error {
		if n := str(e, "name"); n != "" {
			names = append(names, n)
		}
		return nil
	})
	return names
}

// recorder passes look-ups through and keeps their failures, to name the
// container and the reason in the warning.
type recorder struct {
	Resolver Resolver
	failed   []lookupError
}

type lookupError struct {
	image string
	err   error
}

func (r *recorder) ImageConfig(ctx context.Context, image string) ([]string, []string, error) {
	if r.Resolver == nil {
		err := errors.New("no registry look-up configured")
		r.failed = append(r.failed, lookupError{image, err})
		return nil, nil, err
	}
	ep, cmd, err := r.Resolver.ImageConfig(ctx, image)
	if err != nil {
		r.failed = append(r.failed, lookupError{image, err})
	}
	return ep, cmd, err
}

// warnings names, for each failed look-up, the containers that run the
// image without a command, and the reason.
func (r *recorder) warnings(pod *yaml.RNode) []string {
	var out []string
	for _, f := range r.failed {
		names := containersWithout(pod, f.image)
		what := fmt.Sprintf("containers %s", strings.Join(names, ", "))
		if len(names) == 1 {
			what = "container " + names[0]
		}
		if len(names) == 0 {
			what = "a container"
		}
		reason := f.err.Error()
		if errors.Is(f.err, context.DeadlineExceeded) {
			reason = "registry look-up timed out: " + reason
		}
		out = append(out, fmt.Sprintf("%s: ENTRYPOINT of image %s not read: %s", what, f.image, reason))
	}
	return out
}

// containersWithout names the containers (quoted) that run image without a
// command of their own.
func containersWithout(pod *yaml.RNode, image string) []string {
	var names []string
	for _, field := range []string{"initContainers", "containers"} {
		list, err := pod.Pipe(yaml.Lookup("spec", field))
		if err != nil || list == nil {
			continue
		}
		_ = list.VisitElements(func(c *yaml.RNode) error {
			if str(c, "image") == image && c.Field("command") == nil {
				names = append(names, fmt.Sprintf("%q", str(c, "name")))
			}
			return nil
		})
	}
	return names
}

// str is the scalar at path under n, or "".
func str(n *yaml.RNode, path ...string) string {
	v, err := n.Pipe(yaml.Lookup(path...))
	if err != nil {
		return ""
	}
	return yaml.GetValue(v)
}

// toJSON encodes a node as JSON straight from the node tree. kyaml's
// MarshalJSON writes the node as YAML and parses it again, which was half
// of an admission's time.
func toJSON(n *yaml.RNode) ([]byte, error) {
	var v any
	if err := n.YNode().Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
