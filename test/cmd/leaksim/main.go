// Command leaksim leaks a network namespace the way the auth_rpcgss bug does,
// for the demo and the benchmark.
//
//	leaksim [-report FILE] NETNS_PATH
//
// It creates a socket inside the netns at NETNS_PATH, closes every nsfs fd
// and prints "pinned" on stdout. From then on the socket is the only thing
// keeping the netns alive: no path, no process inside it, no nsfs fd. The
// caller removes the path (ip netns del) and the netns survives, with its
// interfaces, exactly like a netns held by the kernel's RPC client.
//
// On SIGUSR1 it writes the interfaces still inside the leaked netns to FILE
// (one "name kind" per line, written atomically), so the caller can show
// what a leaked pod keeps. It releases the netns on SIGTERM or SIGINT, and
// when its parent dies, so a killed script cannot leave the netns behind.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func main() {
	report := flag.String("report", "", "file to write the netns's interfaces to on SIGUSR1")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-report FILE] NETNS_PATH\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *report); err != nil {
		fmt.Fprintf(os.Stderr, "leaksim: %v\n", err)
		os.Exit(1)
	}
}

func run(path, report string) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if os.Getppid() == 1 {
		return fmt.Errorf("parent already gone")
	}
	sock, err := pin(path)
	if err != nil {
		return err
	}
	defer unix.Close(sock)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	fmt.Println("pinned")
	for s := range sigs {
		if s != syscall.SIGUSR1 {
			return nil
		}
		if report == "" {
			continue
		}
		if err := writeReport(sock, report); err != nil {
			fmt.Fprintf(os.Stderr, "leaksim: report: %v\n", err)
		}
	}
	return nil
}

// pin returns a socket created inside the netns at path.
func pin(path string) (int, error) {
	sock := -1
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		sock, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("create pinning socket in %s: %w", path, err)
	}
	return sock, nil
}

// writeReport lists the links of the socket's netns, reached through the
// socket itself (SIOCGSKNS) since the netns has no path any more.
func writeReport(sock int, file string) error {
	nsfd, err := unix.IoctlRetInt(sock, unix.SIOCGSKNS)
	if err != nil {
		return fmt.Errorf("get netns of pinning socket: %w", err)
	}
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(nsfd))
	unix.Close(nsfd)
	if err != nil {
		return fmt.Errorf("open netlink in leaked netns: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links in leaked netns: %w", err)
	}
	var b strings.Builder
	for _, l := range links {
		fmt.Fprintf(&b, "%s %s\n", l.Attrs().Name, l.Type())
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}
