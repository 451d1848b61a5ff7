// Package report holds what test/app writes to APP_REPORT, so that the
// app that writes it and the tests that read it share one definition.
package report

import "syscall"

// Report is what the app saw.
type Report struct {
	PID       int      `json:"pid"`
	UID       int      `json:"uid"`
	GID       int      `json:"gid"`
	Argv      []string `json:"argv"`
	Env       []string `json:"env"`
	StartNano int64    `json:"start_unix_nano"`
	SigIgn    string   `json:"sig_ign"` // from /proc/self/status, hex
	SigBlk    string   `json:"sig_blk"`
	CapBnd    string   `json:"cap_bnd"` // from /proc/self/status, hex
	CapEff    string   `json:"cap_eff"`
	Hosts     bool     `json:"hosts_file"`
	Fetch     string   `json:"fetch,omitempty"` // status line or error
	Signals   []string `json:"signals,omitempty"`
}

// Signals are the signals the app catches with APP_SIGNALS (all those
// that tests send and a process may catch), by the names it reports.
var Signals = map[syscall.Signal]string{syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGTERM: "SIGTERM", syscall.SIGWINCH: "SIGWINCH",
	syscall.SIGURG: "SIGURG", syscall.SIGCHLD: "SIGCHLD", syscall.SIGALRM: "SIGALRM"}
