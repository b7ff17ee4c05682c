package nri

import (
	"context"
	"os"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
)

// writeState reports the connection state to the settings' StateFile (if
// set: from the command line, or the runtime's drop-in once configured).
// A failure is logged at debug level: the agent then reads the file as
// stale, which is the truth it can act on.
func (p *Plugin) writeState() {
	s, _ := p.current()
	if s.StateFile == "" {
		return
	}
	up, since := p.conn.get()
	err := nristate.Write(s.StateFile, nristate.State{
		PID: os.Getpid(), Connected: up, Since: since, Updated: time.Now(),
		Injected: p.stats.injected.Load(),
	})
	if err != nil {
		p.log().Debug("cannot write the state file", "path", s.StateFile, "error", err)
	}
}

// heartbeat rewrites the state file every nristate.Heartbeat until ctx is
// done, then once more as disconnected (the plugin is stopping).
func (p *Plugin) heartbeat(ctx context.Context) {
	t := time.NewTicker(nristate.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.writeState()
		}
	}
}
