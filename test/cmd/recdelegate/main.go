// Command recdelegate is a test-only CNI plugin that a wrapper delegates to:
// it appends every call (verb, CNI_NETNS, stdin) as a JSON line to
// <recordDir>/calls.jsonl, prints the configured "result" on ADD, and fails a
// verb on demand while <recordDir>/fail-<VERB> exists (with that file's
// content as the message, code 11).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"
)

type conf struct {
	types.PluginConf
	RecordDir string          `json:"recordDir"`
	Result    json.RawMessage `json:"result"`
}

// Call is one recorded invocation.
type Call struct {
	Verb  string          `json:"verb"`
	Netns string          `json:"netns"`
	Stdin json.RawMessage `json:"stdin"`
}

func handle(verb string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		var c conf
		if err := json.Unmarshal(args.StdinData, &c); err != nil {
			return fmt.Errorf("parse config: %w", err)
		}
		if c.RecordDir == "" {
			return errors.New("recordDir not set")
		}
		line, err := json.Marshal(Call{Verb: verb, Netns: args.Netns, Stdin: args.StdinData})
		if err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(c.RecordDir, "calls.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		_, err = f.Write(append(line, '\n'))
		f.Close()
		if err != nil {
			return err
		}
		if msg, err := os.ReadFile(filepath.Join(c.RecordDir, "fail-"+verb)); err == nil {
			return types.NewError(types.ErrTryAgainLater, string(msg), "")
		}
		if verb != "ADD" {
			return nil
		}
		if len(c.Result) == 0 {
			return errors.New("no result configured")
		}
		r, err := create.CreateFromBytes(c.Result)
		if err != nil {
			return fmt.Errorf("configured result: %w", err)
		}
		return types.PrintResult(r, c.CNIVersion)
	}
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: handle("ADD"), Del: handle("DEL"), Check: handle("CHECK"), GC: handle("GC"), Status: handle("STATUS"),
	}, version.All, "recdelegate (leakguard tests)")
}
