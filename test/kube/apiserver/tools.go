//go:build tools

// Package apiserver pins the kube-apiserver that the webhook tests run:
// make kube-bins builds k8s.io/kubernetes/cmd/kube-apiserver from this module.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
