// Command weed is the SeaweedFS weed command, release 4.53 at module
// version v0.0.0-20261109003541-7506e5f91cd6, built from the Go module
// proxy for pagewire's tests: internal/s3test runs `weed mini` as an S3
// server on loopback. SeaweedFS's own main (weed/weed.go) is package main
// and cannot be imported, so this one dispatches to the same command table,
// weed/command.Commands, with the same global flags, so `weed mini ...`
// behaves as the released binary does. It leaves out what the tests do not
// need: Sentry error reporting, shell autocompletion, the web UI's static
// files and `weed help`.
//
// Build it once and reuse it: `make seaweedfs` puts it in the cache folder
// the tests look in (WEED_BIN overrides).
package main

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/seaweedfs/seaweedfs/weed/command"
	"github.com/seaweedfs/seaweedfs/weed/glog"
	weedserver "github.com/seaweedfs/seaweedfs/weed/server"
	"github.com/seaweedfs/seaweedfs/weed/util"
	flag "github.com/seaweedfs/seaweedfs/weed/util/fla9"
	weedhttp "github.com/seaweedfs/seaweedfs/weed/util/http"
)

func main() {
	// The global flags weed.go has besides glog's (-v, -logdir, ...).
	flag.Var(&util.ConfigurationFileDirectory, "config_dir", "directory with toml configuration files")
	flag.Usage = usage
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		usage()
	}

	// Rotate logs as weed.go does; the UI's static files are left out.
	glog.MaxSize = 10 << 20
	glog.MaxFileCount = 5
	weedserver.StaticFS = noFiles{}

	for _, cmd := range command.Commands {
		if cmd.Name() != args[0] || cmd.Run == nil {
			continue
		}
		if cmd.Name() != command.GetFuseCommandName() {
			weedhttp.InitGlobalHttpClient()
		}
		cmd.Flag.Usage = cmd.Usage
		_ = cmd.Flag.Parse(args[1:])
		if !cmd.Run(cmd, cmd.Flag.Args()) {
			cmd.Flag.Usage() // exits 2
		}
		os.Exit(command.CommandExitStatus())
	}
	fmt.Fprintf(os.Stderr, "weed: unknown command %q\n", args[0])
	usage()
}

// usage lists the commands and exits 2.
func usage() {
	fmt.Fprintf(os.Stderr, "usage: weed [global flags] command [flags]\n\ncommands:\n")
	for _, cmd := range command.Commands {
		if cmd.Runnable() {
			fmt.Fprintf(os.Stderr, "  %-22s %s\n", cmd.Name(), cmd.Short)
		}
	}
	fmt.Fprintf(os.Stderr, "\nglobal flags:\n")
	flag.PrintDefaults()
	os.Exit(2)
}

// noFiles is an empty file system: the web UI's static files are not built in.
type noFiles struct{}

func (noFiles) Open(string) (fs.File, error) { return nil, fs.ErrNotExist }
