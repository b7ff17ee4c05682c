package k8s

import (
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/kube"
	"github.com/leakguard/leakguard/test/runtime"
)

// TestCluster runs every e2e test on one cluster, in order: each subtest
// leaves the state the next one starts from (the DaemonSet installed and
// Ready until Uninstall, the node's original primary in place).
func TestCluster(t *testing.T) {
	c := kube.Start(t, testTools, kube.Options{
		// The node as before a CNI add-on: the bridge primary alone, no
		// leakguard binary; the DaemonSet must bring both.
		Chain: runtime.ChainOptions{NoLeakguardBinary: true},
	})
	c.ImportImage(t, testImage.Archive)
	e := &env{c: c}
	e.ov = newOverlay(t, c,
		// A scan a second: the leak test waits for the agent. No
		// re-insertion rate limit in reach: the latency figures are the
		// installer's, not the limiter's (it has its own tests).
		map[string]string{"interval": "1s", "revert-burst": "1000"},
		// leakguard's log where the harness reads it (and the state dir
		// the overlay moved, explicit even if the ConfigMap relies on the
		// default).
		map[string]any{"stateDir": c.CNI.StateDir, "logFile": c.CNI.LogFile, "logLevel": "debug"})

	steps := []struct {
		name string
		run  func(*testing.T, *env)
		// installed: the step needs the DaemonSet installed and Ready.
		installed bool
	}{
		{"Install", testInstall, false},
		{"Leak", testLeak, true},
		{"LeakReapedByAgent", testLeakReapedByAgent, true},
		{"RewriteRename", testRewriteRename, true},
		{"RewriteInPlace", testRewriteInPlace, true},
		{"ReinsertionLatency", testReinsertionLatency, true},
		{"ConfToConflist", testConfToConflist, true},
		{"TwoPrimaries", testTwoPrimaries, true},
		{"AgentFigures", testAgentFigures, true},
		{"RolloutRestart", testRolloutRestart, true},
		{"Uninstall", testUninstall, true},
		{"KillInstaller", testKillInstaller, false},
	}
	for _, s := range steps {
		// Run alone (-run TestCluster/X), a step still finds the state it
		// needs: the install is its own first step then.
		ok := t.Run(s.name, func(t *testing.T) {
			if s.installed && !e.installed {
				testInstall(t, e)
			}
			s.run(t, e)
		})
		if !ok && s.name == "Install" {
			t.Fatal("Install failed: the later steps need it")
		}
	}
}

// step budget: generous timeouts, the machine is shared.
const (
	agentReadyTimeout = 120 * time.Second
	entryTimeout      = 10 * time.Second
)
