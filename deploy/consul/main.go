// Command consul is the Consul 1.14.11 agent, built from the Go module
// proxy for pagewire's tests: newer Consul releases do not build from the
// modules served here. It runs Consul's own command table, so
// `consul agent -dev ...` behaves as the released binary does.
//
// Build it once and reuse it: `make consul` puts it in the cache folder the
// tests look in (CONSUL_BIN overrides).
package main

import (
	"fmt"
	"os"

	mcli "github.com/mitchellh/cli"

	"github.com/hashicorp/consul/command"
	"github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
)

func main() {
	ui := &cli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	commands := command.RegisteredCommands(ui)
	c := &mcli.CLI{
		Name:        "consul",
		Args:        os.Args[1:],
		Commands:    commands,
		HelpFunc:    mcli.BasicHelpFunc("consul"),
		HelpWriter:  os.Stdout,
		ErrorWriter: os.Stderr,
	}
	if c.IsVersion() {
		os.Exit(version.New(ui).Run(nil))
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}
