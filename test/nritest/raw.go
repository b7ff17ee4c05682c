package nritest

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/net/multiplex"
	"github.com/containerd/ttrpc"
)

// Raw is a runtime side the test drives request by request, to play a
// runtime that misbehaves: each plugin connection accepted at the socket is
// handed to the test as a RawConn once the plugin has sent its
// registration (answered or not, as the test asked).
type Raw struct {
	l     net.Listener
	Conns chan *RawConn

	mu       sync.Mutex
	accepted int
	wg       sync.WaitGroup
}

// RawConn is one plugin connection: Plugin sends requests to the plugin.
type RawConn struct {
	Plugin api.PluginService
	Req    *api.RegisterPluginRequest
	conn   net.Conn
	mux    multiplex.Mux
}

// Close drops the connection, as a runtime that exits does.
func (c *RawConn) Close() { c.mux.Close(); c.conn.Close() }

type rawRuntime struct {
	registered chan *api.RegisterPluginRequest
	answer     bool
}

func (r *rawRuntime) RegisterPlugin(ctx context.Context, req *api.RegisterPluginRequest) (*api.Empty, error) {
	select {
	case r.registered <- req:
	default:
	}
	if !r.answer {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &api.Empty{}, nil
}

func (r *rawRuntime) UpdateContainers(context.Context, *api.UpdateContainersRequest) (*api.UpdateContainersResponse, error) {
	return &api.UpdateContainersResponse{}, nil
}

// ListenRaw accepts plugin connections at sock until the test ends.
// answerRegister false: RegisterPlugin is never answered.
func ListenRaw(t *testing.T, sock string, answerRegister bool) *Raw {
	t.Helper()
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r := &Raw{l: l, Conns: make(chan *RawConn, 1024)}
	var conns []*RawConn
	var cmu sync.Mutex
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		l.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		r.wg.Wait()
	})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.accepted++
			r.mu.Unlock()
			// Reads wait until both services are set up, as in the adaptation:
			// a message for a connection not yet opened would be lost.
			mux := multiplex.Multiplex(conn, multiplex.WithBlockedRead())
			pconn, err := mux.Open(multiplex.PluginServiceConn)
			if err != nil {
				conn.Close()
				continue
			}
			rpcc := ttrpc.NewClient(pconn)
			rpcs, err := ttrpc.NewServer()
			if err != nil {
				conn.Close()
				continue
			}
			rt := &rawRuntime{registered: make(chan *api.RegisterPluginRequest, 1), answer: answerRegister}
			api.RegisterRuntimeService(rpcs, rt)
			rpcl, err := mux.Listen(multiplex.RuntimeServiceConn)
			if err != nil {
				conn.Close()
				continue
			}
			go rpcs.Serve(context.Background(), rpcl) //nolint:errcheck // ends with the connection
			mux.Unblock()
			rc := &RawConn{Plugin: api.NewPluginClient(rpcc), conn: conn, mux: mux}
			cmu.Lock()
			conns = append(conns, rc)
			cmu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				select {
				case rc.Req = <-rt.registered:
					r.Conns <- rc
				case <-done:
				}
			}()
		}
	}()
	return r
}

// Accepted is the number of connections accepted so far.
func (r *Raw) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}
