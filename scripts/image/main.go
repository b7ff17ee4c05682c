// Command image builds leakguard's container image offline (make image):
// the four static binaries of bin/ in /bin on an empty base, Entrypoint
// /bin/leakguardctl, written as one archive that both `ctr images import`
// and `docker load` take, plus a file holding the image reference.
//
// It is a build tool, not a shipped binary: it lives under scripts/ and is
// run with `go run ./scripts/image`. The archive is reproducible: the same
// binaries, name, labels and --created give the same bytes.
//
// Exit codes: 0 written, 1 error, 2 usage.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	o, err := parse(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 2
	}
	if err := o.write(); err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	return 0
}

// options are the command line.
type options struct {
	BinDir   string // where make build put the binaries
	Out      string // the archive
	RefOut   string // the one-line file naming the image
	Name     string // full reference, e.g. ghcr.io/leakguard/leakguard:v1
	Version  string // org.opencontainers.image.version
	Revision string // org.opencontainers.image.revision
	Source   string // org.opencontainers.image.source
	Created  time.Time
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	var created string
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.BinDir, "bin", "bin", "dir holding "+binaryList())
	fs.StringVar(&o.Out, "out", "bin/leakguard-image.tar", "the image archive to write (OCI layout with a docker manifest.json)")
	fs.StringVar(&o.RefOut, "ref-out", "bin/leakguard-image.ref", "file to write the image reference into (one line)")
	fs.StringVar(&o.Name, "image", "", "the image reference, e.g. ghcr.io/leakguard/leakguard:v1 (required)")
	fs.StringVar(&o.Version, "version", "", "org.opencontainers.image.version label (default: the reference's tag)")
	fs.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision label (the VCS commit; omitted when empty)")
	fs.StringVar(&o.Source, "source", "", "org.opencontainers.image.source label (omitted when empty)")
	fs.StringVar(&created, "created", "0", "creation time, seconds since the epoch (e.g. the commit's time, for reproducible builds)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.Name == "" {
		return o, fmt.Errorf("--image is required")
	}
	secs, err := strconv.ParseInt(created, 10, 64)
	if err != nil || secs < 0 {
		return o, fmt.Errorf("--created %q is not a number of seconds since the epoch", created)
	}
	o.Created = time.Unix(secs, 0).UTC()
	return o, nil
}
