package cnitest

import (
	"bytes"
	"crypto/sha512"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Cnitool runs the real cnitool inside the node netns, exactly as a runtime
// on that node would invoke the chain.
type Cnitool struct {
	Tools Tools
	// NodeNS is the path of the netns playing the host.
	NodeNS string
	// NetConfPath is the directory holding the conflist copy (NETCONFPATH).
	NetConfPath string
	// IfName is CNI_IFNAME; cnitool defaults to eth0.
	IfName string
}

// Run executes `cnitool <verb> <network> <netnsPath>` with CNI_ARGS and
// returns its stdout; the error carries stderr.
func (c Cnitool) Run(verb, network, netnsPath, cniArgs string) (string, error) {
	cmd := exec.Command("nsenter", "--net="+c.NodeNS, "--", c.Tools.Cnitool(), verb, network, netnsPath)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"CNI_PATH=" + c.Tools.CNIPath(),
		"NETCONFPATH=" + c.NetConfPath,
	}
	if cniArgs != "" {
		cmd.Env = append(cmd.Env, "CNI_ARGS="+cniArgs)
	}
	if c.IfName != "" {
		cmd.Env = append(cmd.Env, "CNI_IFNAME="+c.IfName)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		// cobra follows the error with the usage text: keep only the error.
		msg, _, _ := strings.Cut(stderr.String(), "\nUsage:")
		return stdout.String(), fmt.Errorf("cnitool %s %s %s (after %v): %w: %s",
			verb, network, netnsPath, time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(msg))
	}
	return stdout.String(), nil
}

// ContainerID is the container ID cnitool derives from a netns path (it has
// no flag or variable for it): the same path always gives the same ID.
func ContainerID(netnsPath string) string {
	abs, err := filepath.Abs(netnsPath)
	if err != nil {
		abs = netnsPath
	}
	s := sha512.Sum512([]byte(abs))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// CacheFile is where libcni (inside cnitool) caches the ADD result. cnitool
// cannot move its cache dir, so tests remove this file when they end.
func CacheFile(network, netnsPath, ifName string) string {
	if ifName == "" {
		ifName = "eth0"
	}
	return filepath.Join("/var/lib/cni/results", fmt.Sprintf("%s-%s-%s", network, ContainerID(netnsPath), ifName))
}
