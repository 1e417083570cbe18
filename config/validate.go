package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
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
	v.backup()
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

// backup checks the backup section: its type, where backups go and the
// keys of each type, then the timings, which are checked (with their
// defaults) even when backups are off, as proxy's are.
func (v *validator) backup() {
	b := v.c.Backup
	switch b.Type {
	case "", BackupTypeFile, BackupTypeS3, BackupTypeGCS, BackupTypeAzure:
		v.backupTarget()
	case BackupTypeLiteFSCloud:
		v.backupOff()
	default:
		v.fail("backup.type", `backup.type %q is not supported: use "file", "s3", "gcs" or "azure", or leave it out to turn backups off`, b.Type)
	}
	v.backupTimings()
}

// backupTarget checks where backups go, for a type that is "" or one of
// pagewire's.
func (v *validator) backupTarget() {
	b := v.c.Backup
	if b.URL != "" && !v.backupURL() {
		return
	}
	kind := b.Kind()
	switch kind {
	case "":
		v.backupOff()
		return
	case BackupTypeFile:
		if b.Bucket != "" {
			v.fail("backup.bucket", `backup.bucket is for types "s3", "gcs" and "azure": backup.type "file" writes to the directory backup.path; remove backup.bucket`)
		}
		if b.Path == "" && b.URL == "" {
			v.fail("backup.path", `backup.path is not set: with backup.type "file" set it to the directory backups go in, e.g. "/mnt/backups"`)
		} else {
			v.backupDir()
		}
	default: // s3, gcs, azure
		switch {
		case b.Bucket == "" && b.URL == "":
			v.fail("backup.bucket", `backup.bucket is not set: with backup.type %q set it to the bucket's name, or set backup.url instead, e.g. "%s"`, kind, exampleBackupURL(kind))
		case strings.Contains(b.Bucket, "/"):
			v.fail("backup.bucket", `backup.bucket %q holds a "/": set only the bucket's name, and put a key prefix in backup.path`, b.Bucket)
		}
		if strings.HasPrefix(b.Path, "/") {
			v.fail("backup.path", `backup.path %q starts with "/": with backup.type %q it is a key prefix inside the bucket, which has none; use %q`, b.Path, kind, strings.TrimLeft(b.Path, "/"))
		}
	}

	// The S3 keys, for s3 only.
	if kind != BackupTypeS3 {
		for _, k := range s3Keys(b) {
			if k.set {
				v.fail(k.key, `%s is for backup.type "s3" only, and the backup type is %q: remove it`, k.key, kind)
			}
		}
		return
	}
	if b.Endpoint != "" {
		if _, err := parseHTTPURL(b.Endpoint); err != nil {
			v.fail("backup.endpoint", `backup.endpoint%s is not an http or https URL: set the S3-compatible store's URL, e.g. "http://localhost:8333" (SeaweedFS) or "http://minio:9000" (MinIO), or remove it for AWS`,
				quotedURL(b.Endpoint))
		}
	}
	switch {
	case b.AccessKeyID != "" && b.SecretAccessKey == "":
		v.fail("backup.secret-access-key", "backup.secret-access-key is not set but backup.access-key-id is: set both (e.g. secret-access-key: ${AWS_SECRET_ACCESS_KEY}), or neither to use the AWS environment variables and files")
	case b.AccessKeyID == "" && b.SecretAccessKey != "":
		v.fail("backup.access-key-id", "backup.access-key-id is not set but backup.secret-access-key is: set both, or neither to use the AWS environment variables and files")
	}
}

// backupURL checks backup.url; it returns false when the URL is unusable,
// so that backupTarget stops.
func (v *validator) backupURL() bool {
	b := v.c.Backup
	const use = `use "s3://bucket/prefix", "gs://bucket/prefix", "azblob://container/prefix" or "file:///dir"`
	u, err := url.Parse(b.URL)
	if err != nil {
		v.fail("backup.url", "backup.url is not a URL: %s", use)
		return false
	}
	kind, ok := backupSchemes[u.Scheme]
	switch {
	case !ok:
		v.fail("backup.url", "backup.url%s has the scheme %q, which is not a backup's: %s", quotedURL(b.URL), u.Scheme, use)
		return false
	case b.Type != "" && b.Type != kind:
		v.fail("backup.url", "backup.url%s is a %q URL, and backup.type is %q: make them agree, or leave backup.type out", quotedURL(b.URL), kind, b.Type)
		return false
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		v.fail("backup.url", "backup.url%s carries options (a query, user info or a fragment): remove them, and set backup's own keys instead (region, endpoint, force-path-style, access-key-id, secret-access-key)", quotedURL(b.URL))
		return false
	case kind == BackupTypeFile && (u.Host != "" || u.Path == ""):
		v.fail("backup.url", `backup.url%s is not a file URL of a directory: use "file:///dir" (three slashes and an absolute path), or backup.type "file" and backup.path`, quotedURL(b.URL))
		return false
	case kind != BackupTypeFile && u.Host == "":
		v.fail("backup.url", `backup.url%s names no bucket: use e.g. "%s"`, quotedURL(b.URL), exampleBackupURL(kind))
		return false
	}
	ok = true
	for _, k := range []struct{ key, val string }{{"backup.bucket", b.Bucket}, {"backup.path", b.Path}} {
		if k.val != "" {
			v.fail(k.key, "%s and backup.url are both set: put the bucket and prefix in backup.url, or use backup.bucket and backup.path and remove backup.url", k.key)
			ok = false
		}
	}
	return ok
}

// backupDir checks that a file backup's directory is neither in data.dir
// nor in fuse.dir.
func (v *validator) backupDir() {
	c := v.c
	key, shown := "backup.path", c.Backup.Path
	if c.Backup.URL != "" {
		key, shown = "backup.url", c.Backup.URL
	}
	_, dir := c.Backup.Location()
	switch {
	case c.Data.Dir != "" && (dir == absPath(c.Data.Dir) || within(absPath(c.Data.Dir), dir)):
		v.fail(key, "%s %q is in data.dir %q: backups there are lost with the node; choose a directory outside it, such as a mounted volume or a network share", key, shown, c.Data.Dir)
	case c.FUSE.Dir != "" && (dir == absPath(c.FUSE.Dir) || within(absPath(c.FUSE.Dir), dir)):
		v.fail(key, "%s %q is in fuse.dir %q, the mount apps see: choose a directory outside it", key, shown, c.FUSE.Dir)
	}
}

// backupOff checks that no key that needs a backup is set when backups
// are off (no type or url, or litefs-cloud's).
func (v *validator) backupOff() {
	b := v.c.Backup
	todo := `set backup.type ("file", "s3", "gcs" or "azure") and where backups go, or remove it`
	if b.Type == BackupTypeLiteFSCloud {
		todo = `backup.type "litefs-cloud" is ignored (LiteFS Cloud closed in October 2024): use backup.type "s3" or "file" instead, or remove it`
	}
	keys := append([]setKey{{"backup.path", b.Path != ""}, {"backup.bucket", b.Bucket != ""}}, s3Keys(b)...)
	for _, k := range keys {
		if k.set {
			v.fail(k.key, "%s is set but backups are off: %s", k.key, todo)
		}
	}
	if b.RestoreOnStart {
		v.fail("backup.restore-on-start", "backup.restore-on-start needs a backup to restore from, and backups are off: %s", todo)
	}
}

// backupTimings checks backup.delay, retention, snapshot-interval and levels.
func (v *validator) backupTimings() {
	b := v.c.Backup
	if b.Delay <= 0 || b.Delay > Duration(MaxBackupDelay) {
		v.fail("backup.delay", `backup.delay is %s: use a duration above 0 and at most %s, such as "%s"`, b.Delay, Duration(MaxBackupDelay), Duration(DefaultBackupDelay))
	}
	if b.Retention < Duration(MinBackupRetention) {
		v.fail("backup.retention", `backup.retention is %s: use at least %s, such as "%s"`, b.Retention, Duration(MinBackupRetention), Duration(DefaultBackupRetention))
	}
	if b.SnapshotInterval < Duration(MinBackupRetention) {
		v.fail("backup.snapshot-interval", `backup.snapshot-interval is %s: use at least %s, such as "%s"`, b.SnapshotInterval, Duration(MinBackupRetention), Duration(DefaultBackupSnapshotInterval))
	}

	const example = "e.g. [30s, 5m, 1h]"
	switch n := len(b.Levels); {
	case n == 0:
		v.fail("backup.levels", "backup.levels is empty: list 1 to %d compaction levels, %s, or remove it for that default", MaxBackupLevels, example)
		return
	case n > MaxBackupLevels:
		v.fail("backup.levels", "backup.levels lists %d levels, more than %d: remove some", n, MaxBackupLevels)
	}
	for i, l := range b.Levels {
		key := fmt.Sprintf("backup.levels[%d]", i)
		switch {
		case l <= b.Delay:
			v.fail(key, "%s is %s, not above backup.delay (%s): each level must be longer than delay, %s", key, l, b.Delay, example)
		case i > 0 && l <= b.Levels[i-1]:
			v.fail(key, "%s is %s, not above backup.levels[%d] (%s): list the levels in increasing order, %s", key, l, i-1, b.Levels[i-1], example)
		}
	}
}

// exampleBackupURL is an example backup.url of a bucket type for messages.
func exampleBackupURL(kind string) string {
	switch kind {
	case BackupTypeGCS:
		return "gs://my-bucket/myapp"
	case BackupTypeAzure:
		return "azblob://my-container/myapp"
	}
	return "s3://my-bucket/myapp"
}

// quotedURL is raw for a message, " " and quoted with any password
// redacted, or "" if raw does not parse (it may hold a secret we cannot
// find).
func quotedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return " " + strconv.Quote(u.Redacted())
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

// setKey is a config key and whether it is set.
type setKey struct {
	key string
	set bool
}

// s3Keys are the backup keys only backup.type s3 uses.
func s3Keys(b BackupConfig) []setKey {
	return []setKey{
		{"backup.region", b.Region != ""},
		{"backup.endpoint", b.Endpoint != ""},
		{"backup.force-path-style", b.ForcePathStyle},
		{"backup.access-key-id", b.AccessKeyID != ""},
		{"backup.secret-access-key", b.SecretAccessKey != ""},
	}
}
