# pagewire's image: `pagewire mount` runs a node and then the app given
# after `--` once the mount is ready (LiteFS's pattern).
#
#   docker build -t pagewire .
#   docker run --cap-add SYS_ADMIN --device /dev/fuse -v pagewire:/var/lib/pagewire \
#     pagewire -- sqlite3 /litefs/app.db 'select 1'
#
# See README.md, "Docker". The `example` target adds deploy/example's app
# (deploy/compose uses it).

# Build static binaries: no cgo, so the runtime needs no Go and no libc match.
FROM golang:1.26-bookworm AS build
# GOPROXY and GOSUMDB may be overridden for a mirror (the container tests
# serve the host's module cache).
ARG GOPROXY=https://proxy.golang.org,direct
ARG GOSUMDB=sum.golang.org
ARG VERSION=dev
ENV CGO_ENABLED=0 GOPROXY=${GOPROXY} GOSUMDB=${GOSUMDB} GOFLAGS=-buildvcs=false
WORKDIR /src
COPY . .
RUN go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/pagewire ./cmd/pagewire \
 && go build -trimpath -ldflags "-s -w" -o /out/example ./deploy/example

# The node: FUSE's userspace tools, the sqlite3 CLI and CA certificates
# (Consul and backups over TLS).
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 sqlite3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/pagewire /usr/local/bin/pagewire
# The image's default config sits where pagewire looks last, so a config
# at ./pagewire.yml, ./litefs.yml or /etc/pagewire.yml, a file mounted over
# /etc/litefs.yml, or -config PATH replaces it.
COPY deploy/docker/litefs.yml /etc/litefs.yml
# The node runs as root: mounting FUSE needs CAP_SYS_ADMIN. The app after
# `--` may drop privileges itself (e.g. `-- setpriv --reuid=1000 ... app`).
EXPOSE 20202
ENTRYPOINT ["pagewire", "mount"]
CMD []

# The runtime plus deploy/example's JSON app, for deploy/compose.
FROM runtime AS example
COPY --from=build /out/example /usr/local/bin/example

# The default target: the node alone.
FROM runtime
