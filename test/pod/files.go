package pod

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The helpers below set modes explicitly, whatever the umask: files and
// directories a container's non-root user must read, run or traverse
// would otherwise depend on how the test was started.

// copyFile copies src to a new file dst with mode perm, creating missing
// directories of dst with mode 0755.
func copyFile(dst, src string, perm fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(dst, data, perm)
}

// writeFile writes data to name with mode perm, creating missing
// directories with mode 0755.
func writeFile(name string, data []byte, perm fs.FileMode) error {
	if err := mkdirAll(filepath.Dir(name)); err != nil {
		return err
	}
	if err := os.WriteFile(name, data, perm); err != nil {
		return err
	}
	return os.Chmod(name, perm)
}

// mkdirAll is os.MkdirAll with mode 0755 for the directories it creates.
func mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); errors.Is(err, fs.ErrExist) {
		return nil
	} else if err != nil {
		return err
	}
	return os.Chmod(dir, 0o755)
}
