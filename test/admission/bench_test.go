package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshgate/meshgate/test/registry"
)

// BenchmarkAdmission admits pods through the API server, each with a
// container without a command whose image (in a registry on loopback that
// asks for the pod's pull secret) the webhook resolves, with a warm cache:
// by tag, each admission costs the webhook a read of the pull secret and a
// manifest request for the tag; by digest, nothing but the transformation.
// It reports the webhook's own time per admission (from its log), the whole
// pod creation as the client sees it, and the webhook's resident memory.
//
//	make bench-webhook    (BENCH_PODS, default 500)
func BenchmarkAdmission(b *testing.B) {
	if env.cluster == nil || env.hook == nil {
		b.Fatalf("no API server: %v", env.err)
	}
	pods := 500
	if s := os.Getenv("BENCH_PODS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_PODS=%q: want a positive number", s)
		}
		pods = n
	}
	ctx := context.Background()
	cs := env.cluster.Client
	if err := env.cluster.Namespace(ctx, "bench", map[string]string{"meshgate.io/inject": "enabled"}); err != nil {
		b.Fatal(err)
	}
	reg := registry.Start(b, "puller", "s3cret")
	tagged, digested := reg.Push(b, "bench/app:1", []string{"/app/entry"}, []string{"serve"})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: reg.DockerConfig()},
	}
	if _, err := cs.CoreV1().Secrets("bench").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	pod := func(name, image string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				AutomountServiceAccountToken: new(bool),
				ImagePullSecrets:             []corev1.LocalObjectReference{{Name: "regcred"}},
				Containers:                   []corev1.Container{{Name: "app", Image: image}},
			},
		}
	}
	// Warm the cache, and check that the webhook wires these pods.
	warm, err := cs.CoreV1().Pods("bench").Create(ctx, pod("bench-warm", tagged), metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if ok, why := wired(warm); !ok {
		b.Fatalf("the warm-up pod is not wired: %s\n%s", why, env.hook.log)
	}

	for i := 0; i < b.N; i++ {
		fmt.Printf("\n| %d pods each, warm cache | p50 | p99 | max |\n|---|---|---|---|\n", pods)
		for _, series := range []struct{ name, image string }{{"tag", tagged}, {"digest", digested}} {
			requests := reg.Requests.Load()
			var client []time.Duration
			prefix := fmt.Sprintf("bench-%d-%s-", i, series.name)
			for j := range pods {
				name := fmt.Sprintf("%s%d", prefix, j)
				start := time.Now()
				got, err := cs.CoreV1().Pods("bench").Create(ctx, pod(name, series.image), metav1.CreateOptions{})
				client = append(client, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if len(got.Spec.Containers[0].Command) == 0 {
					b.Fatalf("pod %s was admitted unwired\n%s", name, env.hook.log)
				}
			}
			hook := webhookTimes(b, prefix)
			if len(hook) != pods {
				b.Fatalf("found %d admissions of pods %s* in the webhook's log, want %d", len(hook), prefix, pods)
			}
			b.ReportMetric(ms(percentile(hook, 50)), "webhook-"+series.name+"-p50-ms")
			b.ReportMetric(ms(percentile(hook, 99)), "webhook-"+series.name+"-p99-ms")
			fmt.Printf("| webhook, image by %s (%d registry requests) | %.2f ms | %.2f ms | %.2f ms |\n", series.name,
				reg.Requests.Load()-requests, ms(percentile(hook, 50)), ms(percentile(hook, 99)), ms(percentile(hook, 100)))
			fmt.Printf("| pod creation as the client sees it, by %s | %.2f ms | %.2f ms | %.2f ms |\n", series.name,
				ms(percentile(client, 50)), ms(percentile(client, 99)), ms(percentile(client, 100)))
		}
		rss, hwm := memory(b, env.hook.cmd.Process.Pid)
		b.ReportMetric(float64(hwm)/1024, "webhook-peak-rss-MiB")
		fmt.Printf("\nwebhook memory: %.1f MiB resident, %.1f MiB peak\n\n", float64(rss)/1024, float64(hwm)/1024)
	}
}

// webhookTimes reads the webhook's time per admission for the pods whose
// names start with prefix, from its "admission reviewed" log lines.
func webhookTimes(b *testing.B, prefix string) []time.Duration {
	var out []time.Duration
	for _, l := range env.hook.log.find(`"admission reviewed"`, `"name":"`+prefix) {
		var e struct {
			Elapsed float64 `json:"elapsed"` // seconds
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			b.Fatalf("log line %s: %v", l, err)
		}
		out = append(out, time.Duration(e.Elapsed*float64(time.Second)))
	}
	return out
}

// memory returns the resident and peak resident set of pid, in KiB.
func memory(b *testing.B, pid int) (rss, hwm int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n
		case "VmHWM:":
			hwm = n
		}
	}
	return rss, hwm
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
