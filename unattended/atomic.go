// Package unattended is what a run from cron or a batch job needs around its output: a
// file that is replaced atomically (File), a lock that keeps two runs of one job from
// overlapping (Lock), and a deterministic split of a target list over several jobs
// (Shard). It does no probing and imports nothing of turnpath's; none of it needs root.
package unattended

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// File is an output file written in the background and put in place at once by Commit:
// until then the previous file at the path stays as it was, whatever happens to the
// process (a crash, kill -9, a full disk). The data goes to an unnamed file in the same
// directory (O_TMPFILE), so a killed run leaves nothing behind; on a file system without
// O_TMPFILE to a hidden temporary file (.NAME.PID.RANDOM.turnpath-tmp), which the next run
// writing NAME removes once its process is gone.
type File struct {
	f    *os.File
	path string
	dir  string
	tmp  string // the named temporary file; "" with O_TMPFILE
	done bool   // committed or aborted
}

// tmpSuffix ends the names of the fallback's temporary files.
const tmpSuffix = ".turnpath-tmp"

// Create starts a new version of the file at path. It fails at once when the directory
// does not exist or takes no new files, so a run finds out before it probes.
func Create(path string) (*File, error) {
	if path == "" {
		return nil, errors.New("create output: empty path")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("create output: %s is a directory", path)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("create output %s: %w", path, unwrapPath(err))
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("create output %s: %s is not a directory", path, dir)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm() // a new version keeps the old one's permissions
	}
	out := &File{path: path, dir: dir}
	// A run killed between naming its file and the rename (or one writing through the
	// fallback) left a hidden file: gone once its process is.
	removeStale(dir, filepath.Base(path))
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, mode)
	if err != nil {
		// No O_TMPFILE here (EOPNOTSUPP, EISDIR on old kernels): a named temporary file.
		// Permission errors are the same either way.
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("create output %s: cannot write in %s: %w", path, dir, unwrapPath(err))
		}
		f, err = os.CreateTemp(dir, "."+filepath.Base(path)+"."+strconv.Itoa(os.Getpid())+".*"+tmpSuffix)
		if err != nil {
			return nil, fmt.Errorf("create output %s: cannot write in %s: %w", path, dir, unwrapPath(err))
		}
		out.tmp = f.Name()
	}
	if err := f.Chmod(mode); err != nil { // O_TMPFILE applied the umask, CreateTemp 0600
		f.Close()
		if out.tmp != "" {
			os.Remove(out.tmp)
		}
		return nil, fmt.Errorf("create output %s: %w", path, err)
	}
	out.f = f
	return out, nil
}

// Path is where the file goes on Commit.
func (f *File) Path() string { return f.path }

// Write writes to the new version.
func (f *File) Write(p []byte) (int, error) {
	if f.done {
		return 0, fmt.Errorf("write %s: already closed", f.path)
	}
	return f.f.Write(p)
}

// Commit puts the new version in place: it is on disk (fsync) before it gets the name,
// and the rename is on disk (fsync of the directory) before Commit returns.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("commit %s: already closed", f.path)
	}
	f.done = true
	if err := f.f.Sync(); err != nil {
		f.f.Close()
		f.removeTmp()
		return fmt.Errorf("sync %s: %w", f.path, err)
	}
	if f.tmp == "" {
		// Give the unnamed file a hidden name first: linkat cannot replace a file.
		f.tmp = filepath.Join(f.dir, "."+filepath.Base(f.path)+"."+strconv.Itoa(os.Getpid())+"."+strconv.FormatInt(time.Now().UnixNano(), 36)+tmpSuffix)
		if err := linkTmp(f.f, f.tmp); err != nil {
			f.f.Close()
			f.tmp = ""
			return fmt.Errorf("name %s: %w", f.path, err)
		}
	}
	if err := f.f.Close(); err != nil {
		f.removeTmp()
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	if err := os.Rename(f.tmp, f.path); err != nil {
		f.removeTmp()
		return fmt.Errorf("rename to %s: %w", f.path, unwrapPath(err))
	}
	f.tmp = ""
	return syncDir(f.dir)
}

// Abort drops the new version; the previous file stays. It does nothing after Commit,
// so `defer f.Abort()` is safe.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	err := f.f.Close()
	f.removeTmp()
	return err
}

func (f *File) removeTmp() {
	if f.tmp != "" {
		os.Remove(f.tmp)
		f.tmp = ""
	}
}

// linkTmp gives the O_TMPFILE file f the name path: through /proc/self/fd, which needs
// no privilege, else by AT_EMPTY_PATH (CAP_DAC_READ_SEARCH) where /proc is not mounted.
func linkTmp(f *os.File, path string) error {
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
	}
	return err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: a file system that does not sync directories
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// removeStale removes the temporary files that runs killed while writing base left in
// dir (fallback names carry the writer's PID; a live writer's file stays).
func removeStale(dir, base string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := "." + base + "."
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, tmpSuffix) {
			continue
		}
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(n, prefix), ".")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// unwrapPath drops the *fs.PathError's operation and path: the caller names the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
