// Command pause is the test pod sandbox's only process: it holds the pod's
// namespaces until it is told to stop, like Kubernetes' pause image, and reaps
// the zombies re-parented to it (it runs as PID 1 of the sandbox). Built
// static, it is the single file of the harness's pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
