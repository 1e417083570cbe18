package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
)

// Validate checks c and returns every problem found as an *Error naming the
// key, joined with errors.Join, or nil. When c came from Parse, errors also
// name the file and line.
func (c *Config) Validate() error {
	v := validator{c: c}
	v.dirs()
	v.exec()
	v.hostPort("http.addr", c.HTTP.Addr, `":20202"`)
	v.proxy()
	v.lease()
	v.logAndReplication()
	v.auth()
	v.tls()
	return v.err()
}

// dirs checks fuse.dir, data.dir, data.retention and data.max-import-size.
func (v *validator) dirs() {
	c := v.c
	switch {
	case c.FUSE.Dir == "":
		v.fail("fuse.dir", `fuse.dir is not set: set it to the directory apps open databases in, e.g. "/litefs"`)
	case c.Data.Dir == "":
		v.fail("data.dir", `data.dir is not set: set it to a directory for pagewire's own files, e.g. "/var/lib/litefs"`)
	default:
		fuse, data := absPath(c.FUSE.Dir), absPath(c.Data.Dir)
		switch {
		case fuse == data:
			v.fail("data.dir", "data.dir %q is the same directory as fuse.dir %q: use two separate directories", c.Data.Dir, c.FUSE.Dir)
		case within(fuse, data):
			v.fail("data.dir", "data.dir %q is inside fuse.dir %q: use directories that do not contain each other", c.Data.Dir, c.FUSE.Dir)
		case within(data, fuse):
			v.fail("fuse.dir", "fuse.dir %q is inside data.dir %q: use directories that do not contain each other", c.FUSE.Dir, c.Data.Dir)
		}
	}
	if p := c.Data.StorageSocketPath(); len(p) > maxSocketPath {
		v.fail("data.storage-socket", "the storage socket %q is %d bytes long, over the %d a unix socket path may be: set data.storage-socket to a shorter path",
			p, len(p), maxSocketPath)
	}
	if c.Data.Retention <= 0 {
		v.fail("data.retention", `data.retention is %s: use a positive duration such as "10m"`, c.Data.Retention)
	}
	if c.Data.MaxImportSize <= 0 {
		v.fail("data.max-import-size", `data.max-import-size is %s: use a positive size such as "32GiB"`, c.Data.MaxImportSize)
	}
}

// exec checks that every exec entry has a command.
func (v *validator) exec() {
	for i, e := range v.c.Exec {
		if strings.TrimSpace(e.Cmd) == "" {
			v.fail(fmt.Sprintf("exec[%d].cmd", i), "exec[%d].cmd is empty: set the command to run, or remove it", i)
		}
	}
}

// proxy checks the proxy section.
func (v *validator) proxy() {
	p := v.c.Proxy

	// proxy.addr, proxy.target and proxy.db go together.
	if p.Addr != "" {
		v.hostPort("proxy.addr", p.Addr, `":8080"`)
		if p.Target == "" {
			v.fail("proxy.target", `proxy.target is not set: with proxy.addr set, set it to your app's host:port, e.g. "localhost:8081"`)
		} else {
			v.hostPort("proxy.target", p.Target, `"localhost:8081"`)
		}
		if p.DB == "" {
			v.fail("proxy.db", `proxy.db is not set: with proxy.addr set, set it to the name of the database to track, e.g. "db"`)
		}
	} else if p.Target != "" || p.DB != "" {
		key := "proxy.target"
		if p.Target == "" {
			key = "proxy.db"
		}
		v.fail(key, `%s is set but proxy.addr is not: set proxy.addr, e.g. ":8080", to run the proxy, or remove the proxy section`, key)
	}

	// Patterns: '*' is the only wildcard, any other character is itself,
	// so only an empty one is wrong.
	for name, pats := range map[string][]string{"proxy.passthrough": p.Passthrough, "proxy.always-forward": p.AlwaysForward} {
		for i, pat := range pats {
			if pat == "" {
				key := fmt.Sprintf("%s[%d]", name, i)
				v.fail(key, `%s is empty: remove it or set a path pattern such as "*.png" or "/static/*"`, key)
			}
		}
	}

	// Durations must be positive.
	if p.MaxLag <= 0 {
		v.fail("proxy.max-lag", `proxy.max-lag is %s: use a positive duration such as "10s"`, p.MaxLag)
	}
	if p.PrimaryRedirectTimeout <= 0 {
		v.fail("proxy.primary-redirect-timeout", `proxy.primary-redirect-timeout is %s: use a positive duration such as "5s"`, p.PrimaryRedirectTimeout)
	}

	// The server's timeouts: 0 is net/http's (and LiteFS's) "none", or
	// "as another timeout" (see ProxyConfig).
	for _, t := range []struct {
		key     string
		d       Duration
		example string
	}{
		{"proxy.read-timeout", p.ReadTimeout, "\"1m\""},
		{"proxy.read-header-timeout", p.ReadHeaderTimeout, "\"10s\""},
		{"proxy.write-timeout", p.WriteTimeout, "\"1m\""},
		{"proxy.idle-timeout", p.IdleTimeout, "\"30s\""},
	} {
		if t.d < 0 {
			v.fail(t.key, "%s is %s: use 0 or a positive duration such as %s", t.key, t.d, t.example)
		}
	}

	// Trusted proxies: CIDRs or single IPs.
	for i, s := range p.TrustedProxies {
		if _, err := parsePrefix(s); err != nil {
			key := fmt.Sprintf("proxy.trusted-proxies[%d]", i)
			v.fail(key, `%s %q is not a CIDR or an IP address: use e.g. "10.0.0.0/8", "fdaa::/16" or "192.0.2.7"`, key, s)
		}
	}
}

// lease checks the lease section: its type's own keys, then the shared ones.
func (v *validator) lease() {
	l := v.c.Lease
	switch l.Type {
	case LeaseTypeStatic:
		if l.AdvertiseURL == "" && !l.Candidate {
			v.fail("lease.advertise-url", `lease.advertise-url is not set: with lease.type "static" and lease.candidate false this node is a replica, so set it to the primary's URL, e.g. "http://primary:20202"`)
		}
	case LeaseTypeConsul:
		v.consul()
	default:
		v.fail("lease.type", `lease.type %q is not supported: use "static" or "consul"`, l.Type)
	}
	if l.AdvertiseURL != "" {
		if _, err := parseHTTPURL(l.AdvertiseURL); err != nil {
			v.fail("lease.advertise-url", `lease.advertise-url %q is not an http or https URL: use e.g. "http://myhost:20202"`, l.AdvertiseURL)
		}
	}
	if l.Hostname == "" {
		v.fail("lease.hostname", "lease.hostname is empty: set it to the name other nodes know this node by")
	}
	if l.DemoteDelay < 0 {
		v.fail("lease.demote-delay", `lease.demote-delay is %s: use 0 or a positive duration such as "10s"`, l.DemoteDelay)
	}
}

// consul checks lease.consul, for lease.type "consul".
func (v *validator) consul() {
	c := v.c.Lease.Consul
	if c.URL == "" {
		v.fail("lease.consul.url", `lease.consul.url is not set: set it to the Consul agent's URL, e.g. "http://localhost:8500", or use lease.type "static"`)
	} else if _, err := parseHTTPURL(c.URL); err != nil {
		// The URL may hold a token (Fly's does): never print it.
		v.fail("lease.consul.url", `lease.consul.url is not an http or https URL: use e.g. "http://localhost:8500"`)
	}
	if c.Key == "" {
		v.fail("lease.consul.key", `lease.consul.key is not set: set a key unique to this cluster, e.g. "litefs/myapp"`)
	}
	if c.TTL <= 0 {
		v.fail("lease.consul.ttl", `lease.consul.ttl is %s: use a positive duration such as "10s"`, c.TTL)
	}
	if c.LockDelay < 0 {
		v.fail("lease.consul.lock-delay", `lease.consul.lock-delay is %s: use 0 or a positive duration such as "1s"`, c.LockDelay)
	}
	if c.CheckTTL != 0 && (c.CheckTTL < Duration(MinConsulCheckTTL) || (c.TTL > 0 && c.CheckTTL >= c.TTL)) {
		v.fail("lease.consul.check-ttl", `lease.consul.check-ttl is %s: use 0 (no check) or a duration from %s to below lease.consul.ttl (%s), such as "%s"`,
			c.CheckTTL, Duration(MinConsulCheckTTL), c.TTL, Duration(DefaultConsulCheckTTL))
	}
}

// logAndReplication checks log.format, replication.sync-replicas and
// replication.sync-timeout.
func (v *validator) logAndReplication() {
	if f := v.c.Log.Format; f != LogFormatText && f != LogFormatJSON {
		v.fail("log.format", `log.format %q is not supported: use "text" or "json"`, f)
	}
	if n := v.c.Replication.SyncReplicas; n < 0 {
		v.fail("replication.sync-replicas", "replication.sync-replicas is %d: use 0 for asynchronous commits, or the number of replicas each commit waits for", n)
	}
	if t := v.c.Replication.SyncTimeout; t < 0 {
		v.fail("replication.sync-timeout", `replication.sync-timeout is %s: use a positive duration such as "10s", or 0 to wait for replicas without limit`, t)
	}
}

// auth checks auth.token and http.serve-storage.
func (v *validator) auth() {
	tokens := v.c.Auth.Token
	for i, t := range tokens {
		key := "auth.token"
		if len(tokens) > 1 {
			key = fmt.Sprintf("auth.token[%d]", i)
		}
		switch {
		case t == "":
			v.fail("auth.token", "%s is empty (an unset environment variable?): set it, or remove auth.token to run without auth", key)
		case strings.TrimSpace(t) != t || strings.ContainsAny(t, " \t\r\n"):
			v.fail("auth.token", "%s contains whitespace: a bearer token cannot; generate one with e.g. `openssl rand -hex 32`", key)
		case len(t) < MinTokenLength:
			v.fail("auth.token", "%s is %d characters, fewer than %d: use a long random token, e.g. `openssl rand -hex 32`", key, len(t), MinTokenLength)
		}
	}
	if v.c.HTTP.ServeStorage && len(tokens) == 0 {
		v.fail("http.serve-storage", "http.serve-storage puts the block protocol, which can rewrite or delete any database, on http.addr: it requires auth.token")
	}
	if v.c.Auth.ProtectMetrics && len(tokens) == 0 {
		v.fail("auth.protect-metrics", "auth.protect-metrics needs auth.token: set a token, or remove auth.protect-metrics")
	}
}

// tls checks the tls section (the files themselves are read at start).
func (v *validator) tls() {
	t := v.c.TLS
	if (t.Cert == "") != (t.Key == "") {
		key := "tls.key"
		if t.Cert == "" {
			key = "tls.cert"
		}
		v.fail(key, "tls.cert and tls.key go together: set both (the port's certificate and its key), or neither")
	}
	switch t.ClientAuth {
	case "", ClientAuthNone:
	case ClientAuthRequire:
		if t.CA == "" || t.Cert == "" {
			v.fail("tls.client-auth", "tls.client-auth: require needs tls.cert, tls.key and tls.ca (the CA that signs client certificates)")
		}
	default:
		v.fail("tls.client-auth", `tls.client-auth %q is not supported: use "none" or "require"`, t.ClientAuth)
	}
	// A static replica's advertise-url is its primary's, which may differ.
	ownURL := v.c.Lease.Type != LeaseTypeStatic || v.c.Lease.Candidate
	if t.Enabled() && ownURL && strings.HasPrefix(v.c.Lease.AdvertiseURL, "http://") {
		v.fail("lease.advertise-url", "lease.advertise-url %q is http:// but tls.cert puts TLS on http.addr: use https://", v.c.Lease.AdvertiseURL)
	}
}

// validator collects Validate's errors.
type validator struct {
	c    *Config
	errs []*Error
}

func (v *validator) fail(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.c.file, Line: v.c.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return join(v.errs)
}

// hostPort checks that addr, the value of key, is host:port.
func (v *validator) hostPort(key, addr, example string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		v.fail(key, "%s %q is not host:port: use e.g. %s", key, addr, example)
	}
}

// line returns the file line of key, or of the nearest enclosing key that
// the file sets ("lease" for an unset "lease.advertise-url"), or 0.
func (c *Config) line(key string) int {
	for key != "" {
		if n, ok := c.lines[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// parseHTTPURL parses s as an absolute http or https URL with a host.
func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("not an http or https URL with a host")
	}
	return u, nil
}

// absPath returns p made absolute and clean, or clean when the working
// directory is unknown.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// within reports whether child is below parent; both are clean.
func within(parent, child string) bool {
	rel, err := filepath.Rel(parent, child)
	return err == nil && rel != "." && filepath.IsLocal(rel)
}
