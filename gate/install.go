package gate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// InstallName is the file name used when the destination is a directory.
const InstallName = "meshgate"

// Installer copies the running binary into a directory shared with other
// containers, for images that have no cp.
type Installer struct {
	// Self opens the binary to copy; nil means the running executable.
	// A reader rather than a file, so that tests can act in mid-copy.
	Self func() (io.ReadCloser, error)
	// Argv0 and Environ are the process's argv[0] and environment: where
	// /proc/self/exe is missing (a chroot, some sandboxes), the running
	// executable is argv[0] found on Environ's PATH, as a shell found it.
	Argv0   string
	Environ []string
	// Log receives one line for the installed file; nil discards it.
	Log *zap.Logger
}

// Installed describes a finished install.
type Installed struct {
	Path   string
	Size   int64
	SHA256 string
}

// Install copies the binary to dest: dest/meshgate when dest is a
// directory, else dest itself, whose directory must exist. The copy is
// written to a new temporary file beside the target, synced, made 0755
// and renamed over the target, so the target is never half-written and
// a rerun is harmless. A symlink at dest is refused, never followed.
// Bad paths are usage errors (exit 2); I/O failures exit 1. When ctx ends
// (a stop signal, as its cause), the copy stops, the temporary file is
// removed, and the error is ctx's cause: the target is left as it was.
func (in *Installer) Install(ctx context.Context, dest string) (Installed, error) {
	target, err := installTarget(dest)
	if err != nil {
		return Installed{}, err
	}
	if cause := stopped(ctx); cause != nil {
		return Installed{}, cause
	}
	src, err := in.self()
	if err != nil {
		return Installed{}, fmt.Errorf("open own executable: %w", err)
	}
	defer src.Close()
	res, err := writeAtomic(ctx, target, src)
	if err != nil {
		return Installed{}, err
	}
	in.log().Info("installed", zap.String("path", res.Path), zap.Int64("size", res.Size), zap.String("sha256", res.SHA256))
	return res, nil
}

// installTarget works out the file to write, refusing anything but a
// directory or a regular file path.
func installTarget(dest string) (string, error) {
	if dest == "" {
		return "", Usagef("install: empty destination")
	}
	fi, err := os.Lstat(dest)
	if err == nil && strings.HasSuffix(dest, "/") {
		// With a trailing slash lstat(2) follows a final symlink, so
		// "link/" would be written through where "link" is refused.
		if lfi, lerr := os.Lstat(strings.TrimRight(dest, "/")); lerr == nil && lfi.Mode()&fs.ModeSymlink != 0 {
			fi = lfi
		}
	}
	switch {
	case err == nil && fi.Mode()&fs.ModeSymlink != 0:
		return "", Usagef("install: destination %q is a symlink; refusing to write through it", dest)
	case err == nil && fi.IsDir():
		return checkTarget(filepath.Join(dest, InstallName))
	case err == nil && !fi.Mode().IsRegular():
		return "", Usagef("install: destination %q is not a directory or a regular file", dest)
	case err == nil:
		return dest, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", Usagef("install: destination %q: %v", dest, unwrapPathError(err))
	case strings.HasSuffix(dest, "/"):
		return "", Usagef("install: directory %q does not exist", dest)
	}
	dir := filepath.Dir(dest)
	dfi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", Usagef("install: directory %q does not exist", dir)
	case err != nil:
		return "", Usagef("install: directory %q: %v", dir, unwrapPathError(err))
	case !dfi.IsDir():
		return "", Usagef("install: %q is not a directory", dir)
	}
	return dest, nil
}

// checkTarget vets the file inside a destination directory.
func checkTarget(target string) (string, error) {
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return target, nil
	case err != nil:
		return "", Usagef("install: %q: %v", target, unwrapPathError(err))
	case fi.Mode()&fs.ModeSymlink != 0:
		return "", Usagef("install: %q is a symlink; refusing to write through it", target)
	case !fi.Mode().IsRegular():
		return "", Usagef("install: %q exists and is not a regular file", target)
	}
	return target, nil
}

// writeAtomic copies src to a temporary file in target's directory and
// renames it over target. rename(2) replaces whatever name is at target,
// even a symlink swapped in meanwhile, without following it.
func writeAtomic(ctx context.Context, target string, src io.Reader) (Installed, error) {
	dir := filepath.Dir(target)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".*.tmp") // O_EXCL: never an existing file
	if err != nil {
		return Installed{}, fmt.Errorf("install: create file in %q: %w", dir, unwrapPathError(err))
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, src})
	if cause := stopped(ctx); cause != nil {
		return Installed{}, cause
	}
	if err != nil {
		return Installed{}, fmt.Errorf("install: write %q: %w", tmp.Name(), unwrapPathError(err))
	}
	if err := tmp.Chmod(0o755); err != nil {
		return Installed{}, fmt.Errorf("install: chmod %q: %w", tmp.Name(), unwrapPathError(err))
	}
	if err := tmp.Sync(); err != nil {
		return Installed{}, fmt.Errorf("install: sync %q: %w", tmp.Name(), unwrapPathError(err))
	}
	if err := tmp.Close(); err != nil {
		return Installed{}, fmt.Errorf("install: close %q: %w", tmp.Name(), unwrapPathError(err))
	}
	if cause := stopped(ctx); cause != nil {
		return Installed{}, cause
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return Installed{}, fmt.Errorf("install: rename to %q: %w", target, unwrapLinkError(err))
	}
	done = true
	// The rename is durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return Installed{Path: target, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// ctxReader stops a copy once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// stopped returns the cause of an ended ctx, or nil.
func stopped(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return context.Cause(ctx)
}

func unwrapLinkError(err error) error {
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

func (in *Installer) self() (io.ReadCloser, error) {
	if in.Self != nil {
		return in.Self()
	}
	f, err := openSelf(in.Argv0, pathOf(in.Environ))
	if err != nil {
		return nil, err // not a nil *os.File in a non-nil interface
	}
	return f, nil
}

func (in *Installer) log() *zap.Logger {
	if in.Log == nil {
		return zap.NewNop()
	}
	return in.Log
}

// openSelf opens the running executable. /proc/self/exe names it even if
// its path was replaced or removed since; without /proc (a chroot, some
// sandboxes) argv[0] is found as a shell would find it.
func openSelf(argv0, path string) (*os.File, error) {
	f, err := os.Open("/proc/self/exe")
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOENT) {
		return nil, err
	}
	p, lerr := LookPath(argv0, path)
	if lerr != nil {
		return nil, fmt.Errorf("no /proc/self/exe, and argv[0]: %w", lerr)
	}
	return os.Open(p)
}
