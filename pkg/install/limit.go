package install

import (
	"time"
)

// revertLimit is a token bucket per file: RevertBurst re-insertions at once,
// then one per RevertInterval. Past it, a re-insertion waits (it is never
// dropped) and the file is named in a warning, at most once a minute.
type revertLimit struct {
	tokens float64
	last   time.Time
	// recent are the re-insertions of the last minute, for the warning.
	recent []time.Time
	warned time.Time
}

// allowReinsert takes a token for a re-insertion into file, or returns a
// *limitError saying when to try again.
func (in *Installer) allowReinsert(file string) error {
	now := time.Now()
	l := in.limits[file]
	if l == nil {
		l = &revertLimit{tokens: float64(in.opts.RevertBurst), last: now}
		in.limits[file] = l
	}
	every := in.opts.RevertInterval
	l.tokens = min(float64(in.opts.RevertBurst), l.tokens+float64(now.Sub(l.last))/float64(every))
	l.last = now
	cut := 0
	for cut < len(l.recent) && now.Sub(l.recent[cut]) > time.Minute {
		cut++
	}
	l.recent = l.recent[cut:]
	if l.tokens < 1 {
		after := time.Duration((1 - l.tokens) * float64(every))
		if now.Sub(l.warned) >= time.Minute {
			l.warned = now
			in.log.Warn("a file keeps losing leakguard's entry: something rewrites it without leakguard; re-insertions are rate-limited (an own file avoids the fight)",
				"file", file, "reinsertionsLastMinute", len(l.recent), "nextIn", after.Round(time.Millisecond).String())
		}
		return &limitError{File: file, After: after}
	}
	l.tokens--
	l.recent = append(l.recent, now)
	return nil
}
