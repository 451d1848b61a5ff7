//go:build tools

// Package etcd pins the etcd that the webhook tests run: make kube-bins
// builds go.etcd.io/etcd/server/v3 (etcd's main package) from this module.
package etcd

import _ "go.etcd.io/etcd/server/v3"
