package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Auth is who may call the node's port.
type Auth struct {
	// Tokens are the bearer tokens the port accepts (several while one is
	// rotated out); empty: every caller is trusted.
	Tokens []string
	// ProtectMetrics requires a token for GET /metrics too; /healthz and
	// /primary stay open.
	ProtectMetrics bool
}

// openMethods are the gRPC services anyone may call: load balancers and
// grpcurl need them, and they show no data.
var openMethods = []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}

// openPaths are the HTTP paths anyone may GET: health checks, and what
// LiteFS apps and scripts read to find the primary (which the mount's
// .primary file shows any local user too).
var openPaths = []string{"/healthz", "/primary"}

// authenticator checks bearer tokens on the port.
type authenticator struct {
	// sums are the tokens' SHA-256s: comparing sums of equal length keeps
	// the comparison constant-time in the token's length too.
	sums           [][sha256.Size]byte
	protectMetrics bool
	failures       *prometheus.CounterVec
}

func newAuthenticator(a Auth) *authenticator {
	au := &authenticator{protectMetrics: a.ProtectMetrics,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pagewire_auth_failures_total",
			Help: "Calls and requests refused for a missing or wrong bearer token, by surface (grpc, http).",
		}, []string{"surface"})}
	for _, t := range a.Tokens {
		au.sums = append(au.sums, sha256.Sum256([]byte(t)))
	}
	return au
}

func (a *authenticator) enabled() bool { return len(a.sums) > 0 }

// check returns "" if header ("Bearer <token>") carries an accepted token,
// else what is wrong with it, for the caller to read.
func (a *authenticator) check(header string) string {
	const prefix = "bearer "
	if header == "" {
		return "this node requires a bearer token (auth.token is set): send \"authorization: Bearer <token>\"; other nodes send their first auth.token, the pagewire CLI takes -token or PAGEWIRE_TOKEN"
	}
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return "the authorization header must be \"Bearer <token>\", with a token from the node's auth.token"
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(header[len(prefix):])))
	ok := 0
	for _, sum := range a.sums {
		ok |= subtle.ConstantTimeCompare(got[:], sum[:])
	}
	if ok != 1 {
		return "the bearer token is not one of the node's auth.token values: check the token the caller sends (PAGEWIRE_TOKEN)"
	}
	return ""
}

// grpcCheck authenticates one gRPC call to method.
func (a *authenticator) grpcCheck(ctx context.Context, method string) error {
	if !a.enabled() {
		return nil
	}
	for _, m := range openMethods {
		if strings.HasPrefix(method, m) {
			return nil
		}
	}
	var header string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			header = v[0]
		}
	}
	if why := a.check(header); why != "" {
		a.failures.WithLabelValues("grpc").Inc()
		return status.Error(codes.Unauthenticated, why)
	}
	return nil
}

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.grpcCheck(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.grpcCheck(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// http wraps the HTTP API: every request needs a token but GETs of the
// open paths (and of /metrics unless it is protected).
func (a *authenticator) http(next http.Handler) http.Handler {
	if !a.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.open(r) {
			next.ServeHTTP(w, r)
			return
		}
		if why := a.check(r.Header.Get("Authorization")); why != "" {
			a.failures.WithLabelValues("http").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="pagewire"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": why})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *authenticator) open(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if r.URL.Path == "/metrics" {
		return !a.protectMetrics
	}
	for _, p := range openPaths {
		if r.URL.Path == p {
			return true
		}
	}
	return false
}
