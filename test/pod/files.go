package pod

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// The helpers below set modes explicitly, whatever the umask: files and
// directories a container's non-root user must read, run or traverse
// would otherwise depend on how the test was started.

// copyTree copies the directory tree src to dst, which must not exist,
// keeping permission bits and symbolic links. dst itself gets mode 0755,
// as an image's root does, even if src is a 0700 temporary directory.
func copyTree(dst, src string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case rel == ".":
			if err := mkdirAll(filepath.Dir(target)); err != nil {
				return err
			}
			return mkdir(target, 0o755)
		case d.IsDir():
			return mkdir(target, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(target, path, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: cannot copy a %v", path, d.Type())
		}
	})
}

// copyFile copies src to a new file dst with mode perm, creating missing
// directories of dst with mode 0755.
func copyFile(dst, src string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := mkdirAll(filepath.Dir(dst)); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, perm)
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
	if err := mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// mkdir creates dir with mode perm.
func mkdir(dir string, perm fs.FileMode) error {
	if err := os.Mkdir(dir, perm); err != nil {
		return err
	}
	return os.Chmod(dir, perm)
}
