// Command pagewire runs a pagewire node and talks to running ones.
//
//	pagewire mount   [-config PATH] [-restore-on-start] [-external-fuse] [-- CMD ARGS...]
//	pagewire fuse    -storage unix:///PATH -dir DIR [-allow-other] [-debug] [-timeout D]
//	pagewire status  [-url URL] [-watch [-interval 1s]]
//	pagewire export  -name DB [-url URL] PATH
//	pagewire import  -name DB [-url URL] PATH
//	pagewire handoff [-url URL] [-to HOST]
//	pagewire halt    -name DB [-url URL] [-ttl D] [-wait D] -- CMD ARGS...
//	pagewire verify  -name DB [-url URL] [-repair]
//	pagewire restore -name DB [-txid X | -timestamp T] [-o FILE] [-config PATH] [-url URL]
//	pagewire backup ls [-name DB] [-config PATH]
//	pagewire version
//
// main.go dispatches the subcommands; mount.go and node.go start a node in
// named steps (config, store, role, listener, proxy, server, mount, run);
// fuse.go runs the mount alone, against another process's storage socket;
// restore.go and backup.go read the backup (restore, backup ls, and a
// node's restore-on-start); the other files are the subcommands that talk
// to a running node. It wires the packages together and holds no logic of
// its own that a test could not reach through them.
package main
