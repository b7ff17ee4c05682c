// Command cnispy records every CNI call a runtime makes, for the runtime
// tests. Installed in a private CNI bin dir under a plugin's name
// (<bin>/bridge), it runs the real plugin found at <bin>/.spied/<name> with
// the same environment and stdin, passes its stdout and exit code through,
// and appends one JSON line per call to <bin>/.spied/calls.jsonl: the verb,
// CNI_CONTAINERID, CNI_NETNS and what that path was at the moment of the call
// (empty, missing, a mounted netns, something else), the exit code and stderr.
// So a test can assert what the runtime sent and in which order, not just the
// outcome.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// maxStderr caps what is kept of a plugin's stderr (and error output) per call.
const maxStderr = 4096

func main() {
	self := os.Args[0]
	dir, name := filepath.Dir(self), filepath.Base(self)
	target := filepath.Join(dir, cnicall.SpyDir, name)

	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(fmt.Errorf("read stdin: %w", err))
	}
	c := cnicall.Call{
		Time:        time.Now().UTC(),
		Plugin:      name,
		Command:     os.Getenv("CNI_COMMAND"),
		ContainerID: os.Getenv("CNI_CONTAINERID"),
		Netns:       os.Getenv("CNI_NETNS"),
		IfName:      os.Getenv("CNI_IFNAME"),
		Args:        os.Getenv("CNI_ARGS"),
	}
	c.NetnsState, c.NetnsInode = netnsState(c.Netns)
	var conf struct {
		Name       string          `json:"name"`
		CNIVersion string          `json:"cniVersion"`
		PrevResult json.RawMessage `json:"prevResult"`
	}
	if json.Unmarshal(stdin, &conf) == nil {
		c.Network, c.CNIVersion = conf.Name, conf.CNIVersion
		c.PrevResult = len(conf.PrevResult) > 0 && string(conf.PrevResult) != "null"
	}

	var stdout, stderr bytes.Buffer
	cmd := exec.Command(target, os.Args[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, &capped{buf: &stderr, max: maxStderr})
	start := time.Now()
	err = cmd.Run()
	c.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		c.ExitCode = exit.ExitCode()
	case err != nil:
		c.ExitCode = 127
		fmt.Fprintf(&stderr, "cnispy: run %s: %v", target, err)
	}
	if c.ExitCode != 0 || c.Command != "ADD" {
		c.Stdout = truncate(stdout.String(), maxStderr) // errors and VERSION
	}
	c.Stderr = stderr.String()
	if err := appendCall(cnicall.LogPath(dir), &c); err != nil {
		fmt.Fprintf(os.Stderr, "cnispy: %v\n", err)
	}
	os.Stdout.Write(stdout.Bytes())
	os.Exit(c.ExitCode)
}

// netnsState tells what CNI_NETNS was when the runtime called.
func netnsState(path string) (string, string) {
	if path == "" {
		return cnicall.NetnsEmpty, ""
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return cnicall.NetnsMissing, ""
		}
		return "error: " + err.Error(), ""
	}
	if fs.Type != unix.NSFS_MAGIC {
		return fmt.Sprintf("not-netns (fs %#x)", fs.Type), ""
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return cnicall.NetnsMounted, ""
	}
	return cnicall.NetnsMounted, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func appendCall(path string, c *cnicall.Call) error {
	line, err := json.Marshal(c)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	// Plugins of one chain run one after the other, but several pods'
	// chains may run at once.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// capped keeps the first max bytes written to it.
type capped struct {
	buf *bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "cnispy: %v\n", err)
	os.Exit(1)
}
