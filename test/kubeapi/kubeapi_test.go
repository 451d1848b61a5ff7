package kubeapi

import (
	"context"
	"os/exec"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStart starts the API server, stores a pod through it and reads it
// back, then stops it and checks that both processes are gone.
func TestStart(t *testing.T) {
	bins := BinDir()
	if m := Missing(bins); m != "" {
		Unavailable(t, m+" not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, bins, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := c.Namespace(ctx, "apps", nil); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	if _, err := c.Client.CoreV1().Pods("apps").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	got, err := c.Client.CoreV1().Pods("apps").Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.ServiceAccountName != "default" || got.Spec.Containers[0].Image != "app:1" {
		t.Errorf("got service account %q image %q, want default app:1", got.Spec.ServiceAccountName, got.Spec.Containers[0].Image)
	}
	api, etcd := c.api, c.etcd
	c.Stop()
	for _, cmd := range []*exec.Cmd{api, etcd} {
		if cmd.ProcessState == nil {
			t.Errorf("%s still running after Stop", cmd.Path)
		}
	}
}
