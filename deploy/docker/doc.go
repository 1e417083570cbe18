// Package docker holds the tests that run pagewire's Docker image for real
// (build tag docker; `make docker-test`). They start dockerd when none runs,
// build the image's base images locally (no registry is needed: a
// debootstrapped Debian imported as debian:bookworm-slim, and that plus the
// host's Go toolchain as golang:1.26-bookworm), `docker build` the
// repository's Dockerfile, and run containers on the host network only.
//
// It has no code outside its tests.
package docker
