package ondelete

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Watcher follows the agent's DaemonSet while the agent runs, so that Stop
// still knows it was deleted when the API server no longer answers the
// agent. `kubectl delete -k` deletes the ServiceAccount and its Role with
// the DaemonSet, before the kubelet stops the pod: at SIGTERM the token is
// refused (401) or the read denied (403), and Decide cannot tell an
// uninstall from an unreachable API. A watch established while the token
// was good is not authorized again: it still delivers the DaemonSet's
// deletion (checked on a real cluster: test/k8s TestCluster/Uninstall).
type Watcher struct {
	log  *slog.Logger
	done chan struct{}

	mu sync.Mutex
	// owner is namespace/name of the DaemonSet, uid the pod's owner's.
	owner, uid string
	// gone says why the DaemonSet is known deleted or being deleted ("":
	// not seen).
	gone string
	// replacedBy is the uid of a DaemonSet of the same name seen alive
	// after the owner (delete -k then apply -k): leakguard is still wanted
	// ("": none, or it went too).
	replacedBy string
	// seen is closed once gone is set.
	seen chan struct{}

	// rv is the last resourceVersion the watch delivered (run's only).
	rv string
}

// StartWatcher watches the DaemonSet owning c's pod until ctx ends,
// re-established with a back-off whenever the stream ends.
func StartWatcher(ctx context.Context, c Config, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{log: log, done: make(chan struct{}), seen: make(chan struct{})}
	go w.run(ctx, c)
	return w
}

// Done is closed once the watcher has stopped (ctx ended).
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Deleted reports whether the watch saw the DaemonSet deleted or given a
// deletionTimestamp, waiting up to wait for it (the SIGTERM may come before
// the event is read): the DaemonSet's namespace/name, why, and whether. A
// DaemonSet of the same name seen alive since (another uid) is a
// replacement, as Decide judges it: not deleted.
func (w *Watcher) Deleted(wait time.Duration) (string, string, bool) {
	select {
	case <-w.seen:
	case <-time.After(wait):
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.owner, w.gone, w.gone != "" && w.replacedBy == ""
}

const (
	watchPauseFirst = time.Second
	watchPauseLast  = 30 * time.Second
	// watchTimeout is the server-side end of each watch (then a new one).
	watchTimeout = 5 * time.Minute
)

func (w *Watcher) run(ctx context.Context, c Config) {
	defer close(w.done)
	backoff := watchPauseFirst
	for ctx.Err() == nil {
		start := time.Now()
		err := w.follow(ctx, c)
		if ctx.Err() != nil {
			return
		}
		// Between two watches `delete -k` may remove the token and the
		// DaemonSet unseen: a watch that lasted (to the server's timeout)
		// or whose version expired is opened again at once; one that
		// failed quickly waits, longer each time.
		if time.Since(start) > watchPauseLast || errors.Is(err, errWatchExpired) {
			backoff = watchPauseFirst
			w.log.Debug("DaemonSet watch ended; again at once", "err", err)
			continue
		}
		w.log.Debug("DaemonSet watch ended; again after a pause", "err", err, "pause", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchPauseLast)
	}
}

// errWatchExpired: the API server no longer has the resourceVersion the
// watch started from (410 Gone); the next starts from the present.
var errWatchExpired = errors.New("the watch's resourceVersion expired")

// watchEvent is one event of the watch stream, decoded only as far as the
// object's identity and deletion.
type watchEvent struct {
	Type   string `json:"type"`
	Object struct {
		Metadata struct {
			UID               string  `json:"uid"`
			ResourceVersion   string  `json:"resourceVersion"`
			DeletionTimestamp *string `json:"deletionTimestamp"`
		} `json:"metadata"`
		// Code is an ERROR event's (a Status).
		Code int `json:"code"`
	} `json:"object"`
}

// follow learns the pod's owner (once) and reads one watch of it to its end.
func (w *Watcher) follow(ctx context.Context, c Config) error {
	w.mu.Lock()
	owner, uid := w.owner, w.uid
	w.mu.Unlock()
	if owner == "" {
		client, err := newClient(c, DefaultAPITimeout)
		if err != nil {
			return err
		}
		var pod corev1.Pod
		err = client.Get().Namespace(c.Namespace).Resource("pods").Name(c.Pod).Do(ctx).Into(&pod)
		client.Client.CloseIdleConnections()
		if err != nil {
			return fmt.Errorf("read pod %s/%s: %w", c.Namespace, c.Pod, err)
		}
		ref := daemonSetOwner(&pod)
		if ref == nil {
			return fmt.Errorf("pod %s/%s is not owned by a DaemonSet", c.Namespace, c.Pod)
		}
		w.mu.Lock()
		w.owner, w.uid = c.Namespace+"/"+ref.Name, string(ref.UID)
		owner, uid = w.owner, w.uid
		w.mu.Unlock()
	}
	// No client timeout: the stream lasts until watchTimeout.
	client, err := newClient(c, 0)
	if err != nil {
		return err
	}
	defer client.Client.CloseIdleConnections()
	name := owner[len(c.Namespace)+1:]
	req := client.Get().AbsPath("/apis/apps/v1").Namespace(c.Namespace).Resource("daemonsets").
		Param("fieldSelector", "metadata.name="+name).Param("watch", "true").
		Param("allowWatchBookmarks", "true").
		Param("timeoutSeconds", fmt.Sprint(int(watchTimeout.Seconds())))
	if w.rv != "" {
		// From where the last watch was: what happened in between is
		// replayed (a watch from nothing only lists what exists).
		req = req.Param("resourceVersion", w.rv)
	}
	stream, err := req.Stream(ctx)
	if err != nil {
		return fmt.Errorf("watch DaemonSet %s: %w", owner, err)
	}
	defer stream.Close()
	dec := json.NewDecoder(io.LimitReader(stream, 64<<20))
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("watch DaemonSet %s: %w", owner, err)
		}
		if ev.Type == "ERROR" {
			if ev.Object.Code == http.StatusGone && w.rv != "" {
				w.rv = ""
				return fmt.Errorf("watch DaemonSet %s: %w", owner, errWatchExpired)
			}
			return fmt.Errorf("watch DaemonSet %s: the API server ended it with an error event (code %d)", owner, ev.Object.Code)
		}
		if v := ev.Object.Metadata.ResourceVersion; v != "" {
			w.rv = v // bookmarks too: they keep it recent
		}
		if other := ev.Object.Metadata.UID; other != uid {
			w.sawOther(ev.Type, other, ev.Object.Metadata.DeletionTimestamp != nil)
			continue
		}
		switch {
		case ev.Type == "DELETED":
			w.setGone("the DaemonSet's deletion was seen on the watch")
		case ev.Object.Metadata.DeletionTimestamp != nil:
			w.setGone("the DaemonSet was seen on the watch being deleted since " + *ev.Object.Metadata.DeletionTimestamp)
		}
	}
}

// sawOther follows a DaemonSet of the owner's name with another uid: alive,
// it replaces the owner (once the owner is gone); deleted, it no longer
// does. Bookmarks and objects without a uid say nothing.
func (w *Watcher) sawOther(typ, uid string, deleting bool) {
	if uid == "" || (typ != "ADDED" && typ != "MODIFIED" && typ != "DELETED") {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case typ != "DELETED" && !deleting:
		if w.replacedBy != uid {
			w.log.Info("a DaemonSet of the same name exists: leakguard stays wanted", "daemonset", w.owner, "uid", uid)
		}
		w.replacedBy = uid
	case w.replacedBy == uid:
		w.replacedBy = ""
	}
}

func (w *Watcher) setGone(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone == "" {
		w.gone = reason
		close(w.seen)
		w.log.Info("the DaemonSet is being deleted", "daemonset", w.owner, "reason", reason)
	}
}
