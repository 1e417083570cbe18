// Command pagewire runs a pagewire node and talks to running ones.
//
//	pagewire mount   [-config PATH] [-- CMD ARGS...]
//	pagewire status  [-url URL]
//	pagewire export  -name DB [-url URL] PATH
//	pagewire import  -name DB [-url URL] PATH
//	pagewire handoff [-url URL] [-to HOST]
//	pagewire halt    -name DB [-url URL] [-ttl D] [-wait D] -- CMD ARGS...
//	pagewire verify  -name DB [-url URL] [-repair]
//	pagewire version
//
// main.go dispatches the subcommands; mount.go and node.go start a node in
// named steps (config, store, role, listener, proxy, server, mount, run);
// the other files are the subcommands that talk to a running node. It
// wires the packages together and holds no logic of its own that a test
// could not reach through them.
package main
