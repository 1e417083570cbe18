// Package backoff is the one retry wait every long-running part of a node
// uses: exponential from Min to Max, each wait jittered to a random point in
// its upper half so that nodes that failed together do not retry together.
package backoff
