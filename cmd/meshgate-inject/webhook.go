package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshgate/meshgate/inject/webhook"
)

const webhookUsage = `meshgate-inject webhook serves the injection as a mutating admission webhook.

Usage:
  meshgate-inject webhook --tls-cert FILE --tls-key FILE [flags]

It serves POST /mutate (AdmissionReview admission.k8s.io/v1 for Pods),
GET /healthz and GET /readyz over TLS, and reloads the certificate when its
files change. Pods it cannot wire are admitted unchanged, with a warning.
Entrypoints of containers without a command are read from the registry
with the pod's imagePullSecrets, which it reads from the API server
(in-cluster credentials, or --kubeconfig).

Flags:
`

// webhookFlags are the flags of "meshgate-inject webhook".
type webhookFlags struct {
	listen, certFile, keyFile, kubeconfig, platform, logLevel string
	lookupTimeout, drain, grace                               time.Duration
	cacheSize                                                 int
	inj                                                       injectFlags
}

// register defines the flags on fl.
func (f *webhookFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.listen, "listen", ":8443", "address to serve on, HOST:PORT")
	fl.StringVar(&f.certFile, "tls-cert", "", "TLS certificate file, PEM (required; reloaded when it changes)")
	fl.StringVar(&f.keyFile, "tls-key", "", "TLS key file, PEM (required; reloaded when it changes)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig to read pull secrets with (default: in-cluster credentials)")
	fl.DurationVar(&f.lookupTimeout, "lookup-timeout", 2*time.Second, "bound on the registry look-ups of one admission (keep it under the webhook's timeoutSeconds)")
	fl.StringVar(&f.platform, "platform", "", "platform of multi-platform images, e.g. linux/arm64 (default: every linux image, which must agree)")
	fl.IntVar(&f.cacheSize, "cache-size", 4096, "image configs kept, by digest")
	fl.DurationVar(&f.drain, "drain", 5*time.Second, "on SIGTERM, how long to keep serving with /readyz failing, so that endpoints drop this replica first")
	fl.DurationVar(&f.grace, "grace", 10*time.Second, "then, how long open requests get to finish")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	f.inj.register(fl, "each pod")
}

// check checks the parsed flags and returns the log level; every error is
// a usageError.
func (f *webhookFlags) check(fl *pflag.FlagSet) (zapcore.Level, error) {
	var level zapcore.Level
	if fl.NArg() > 0 {
		return level, usageError{fmt.Errorf("webhook: unexpected argument %q", fl.Arg(0))}
	}
	if f.certFile == "" || f.keyFile == "" {
		return level, usageError{errors.New("webhook: --tls-cert and --tls-key are required")}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--lookup-timeout", f.lookupTimeout}, {"--drain", f.drain}, {"--grace", f.grace}} {
		if d.v < 0 || d.name == "--lookup-timeout" && d.v == 0 {
			return level, usageError{fmt.Errorf("webhook: %s %v: want a positive duration", d.name, d.v)}
		}
	}
	if f.cacheSize < 1 {
		return level, usageError{fmt.Errorf("webhook: --cache-size %d: want at least 1", f.cacheSize)}
	}
	if err := level.Set(f.logLevel); err != nil {
		return level, usageError{fmt.Errorf("webhook: --log-level %q: want debug, info, warn or error", f.logLevel)}
	}
	if err := f.inj.parse(); err != nil {
		return level, usageError{err}
	}
	if err := f.inj.opts.Validate(); err != nil {
		return level, usageError{err}
	}
	if f.platform != "" {
		if _, err := v1.ParsePlatform(f.platform); err != nil {
			return level, usageError{fmt.Errorf("webhook: --platform %q: %w", f.platform, err)}
		}
	}
	return level, nil
}

// serveWebhook is "meshgate-inject webhook": it serves until ctx ends,
// then drains and returns nil.
func serveWebhook(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := pflag.NewFlagSet("meshgate-inject webhook", pflag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var f webhookFlags
	f.register(fl)
	if err := parseFlags(fl, args, stdout, webhookUsage); err != nil {
		return err
	}
	level, err := f.check(fl)
	if err != nil {
		return err
	}
	srv, ln, err := f.server()
	if err != nil {
		return usageError{fmt.Errorf("webhook: %w", err)}
	}
	log := newLogger(stderr, level)
	defer func() { _ = log.Sync() }()
	srv.Log, srv.Certs.Log, srv.Handler.Log = log, log, log
	if err := srv.Serve(ctx, ln); err != nil {
		log.Error("exiting", zap.Error(err))
		return err
	}
	return nil
}

// server loads what the flags name (the certificate, the cluster's
// credentials) and opens the listener: the server, ready but for its
// logger.
func (f *webhookFlags) server() (*webhook.Server, net.Listener, error) {
	certs := &webhook.Certs{CertFile: f.certFile, KeyFile: f.keyFile}
	if err := certs.Load(); err != nil {
		return nil, nil, err
	}
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, nil, fmt.Errorf("--listen %q: %w", f.listen, err)
	}
	return &webhook.Server{
		Handler: &webhook.Handler{
			Transform:     webhook.Inject{Options: f.inj.opts},
			Lookups:       &webhook.Registry{Secrets: secretGetter(client), Platform: f.platform, MaxEntries: f.cacheSize},
			LookupTimeout: f.lookupTimeout,
		},
		Certs: certs,
		Drain: f.drain,
		Grace: f.grace,
	}, ln, nil
}

// restConfig is the API server's address and credentials: the kubeconfig
// file given, else the pod's service account.
func restConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err)
		}
	} else if cfg, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("not in a cluster (%v): give --kubeconfig", err)
	}
	// client-go's default of 5 requests a second would queue admissions
	// behind each other's pull secret reads (200 ms each at a steady
	// rate); the API server's priority and fairness protects it instead.
	cfg.QPS, cfg.Burst = 200, 400
	cfg.UserAgent = "meshgate-inject-webhook"
	return cfg, nil
}

// secretGetter reads one Secret with client.
func secretGetter(client kubernetes.Interface) webhook.SecretGetter {
	return func(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
		return client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	}
}

// newLogger logs JSON to stderr, as meshgate does.
func newLogger(stderr io.Writer, level zapcore.Level) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(stderr), level)
	return zap.New(core).Named("webhook")
}
