package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Lease types, the values of lease.type.
const (
	LeaseTypeStatic = "static" // one fixed primary: the node with lease.candidate true
	LeaseTypeConsul = "consul" // the primary holds a Consul lock; candidates take over
)

// Log formats, the values of log.format.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// Defaults that Default sets (DESIGN §3, §4; LiteFS's where DESIGN is silent).
const (
	DefaultFUSEDir                = "./pagewire/mnt"
	DefaultDataDir                = "./pagewire/data"
	DefaultHTTPAddr               = ":20202"
	DefaultRetention              = 10 * time.Minute
	DefaultMaxImportSize          = 32 << 30 // 32 GiB
	DefaultMaxLag                 = 10 * time.Second
	DefaultPrimaryRedirectTimeout = 5 * time.Second
	DefaultProxyReadHeaderTimeout = 10 * time.Second // LiteFS's; read-timeout and write-timeout default to 0 (none)
	DefaultProxyIdleTimeout       = 30 * time.Second // LiteFS's
	DefaultDemoteDelay            = 10 * time.Second
	DefaultConsulKey              = "litefs/primary"
	DefaultConsulTTL              = 10 * time.Second
	DefaultConsulLockDelay        = 1 * time.Second
	DefaultConsulCheckTTL         = 2 * time.Second // pagewire's own; consul.DefaultCheckTTL
	MinConsulCheckTTL             = 1 * time.Second
	DefaultSyncTimeout            = 0 // wait for replicas without limit
)

// Config is a node's whole configuration, litefs.yml compatible.
// Build one with Default, Parse or Load; a zero Config is not valid.
type Config struct {
	FUSE        FUSEConfig `yaml:"fuse"`
	Data        DataConfig `yaml:"data"`
	ExitOnError bool       `yaml:"exit-on-error"` // exit on a startup validation error; default true, as LiteFS
	SkipSync    bool       `yaml:"skip-sync"`     // start exec before the node is primary or synced
	// Exec is run once the node is ready: all but the last command run to
	// completion first. In YAML it is a string or a list of {cmd, if-candidate}.
	Exec        ExecList          `yaml:"exec"`
	HTTP        HTTPConfig        `yaml:"http"`
	Proxy       ProxyConfig       `yaml:"proxy"`
	Lease       LeaseConfig       `yaml:"lease"`
	Log         LogConfig         `yaml:"log"`
	Replication ReplicationConfig `yaml:"replication"`
	Backup      BackupConfig      `yaml:"backup"`
	Auth        AuthConfig        `yaml:"auth"`
	TLS         TLSConfig         `yaml:"tls"`

	// Ignored lists the LiteFS keys the file set that pagewire has no use
	// for (LiteFS Cloud backups, tracing, ...): they are
	// accepted so that an existing litefs.yml keeps working.
	Ignored []Ignored `yaml:"-"`

	// file and lines say where values came from, for error messages: the
	// file name given to Parse, and the line of each dotted key path set in
	// it ("lease.consul.url", "exec[1].cmd"). Both are empty for Default.
	file  string
	lines map[string]int
}

// Ignored is a LiteFS key the file set that pagewire ignores.
type Ignored struct {
	Key  string // dotted key path, e.g. "data.retention-monitor-interval"
	Line int    // line in the file
}

// FUSEConfig is the fuse section: the mount that apps open databases on.
type FUSEConfig struct {
	Dir        string `yaml:"dir"`         // mount directory; required
	AllowOther bool   `yaml:"allow-other"` // let other users open the mount
	Debug      bool   `yaml:"debug"`       // log every FUSE call
}

// DataConfig is the data section: pagewire's own files.
type DataConfig struct {
	Dir       string   `yaml:"dir"`       // required; must not contain or be inside fuse.dir
	Retention Duration `yaml:"retention"` // how long transaction logs are kept; > 0, default 10m
	Compress  bool     `yaml:"compress"`  // compress transaction logs; default true, as LiteFS
	// MaxImportSize bounds a database `pagewire import` (ImportDatabase)
	// sends: a larger one is refused once this many bytes arrived. > 0,
	// default 32GiB.
	MaxImportSize ByteSize `yaml:"max-import-size"`
	// StorageSocket is the unix socket (mode 0600) StorageService, the
	// mount's block protocol, is served on for a mount in another process;
	// "" puts it in data.dir as storage.sock. It is never served on
	// http.addr.
	StorageSocket string `yaml:"storage-socket"`
}

// StorageSocketName is the storage socket's name in data.dir by default.
const StorageSocketName = "storage.sock"

// maxSocketPath is the longest unix socket path Linux takes (sun_path is
// 108 bytes, with its terminating NUL).
const maxSocketPath = 107

// StorageSocketPath is where the storage socket is: data.storage-socket,
// or storage.sock in data.dir.
func (d DataConfig) StorageSocketPath() string {
	if d.StorageSocket != "" {
		return d.StorageSocket
	}
	return filepath.Join(d.Dir, StorageSocketName)
}

// ExecCmd is one command of exec.
type ExecCmd struct {
	Cmd         string `yaml:"cmd"`          // shell command line; must not be empty
	IfCandidate bool   `yaml:"if-candidate"` // run only on a node that can become primary
}

// HTTPConfig is the http section: the node's one API port (DESIGN §6).
type HTTPConfig struct {
	Addr string `yaml:"addr"` // host:port to listen on; default ":20202"
	// ServeStorage serves StorageService, the mount's block protocol, on
	// http.addr too, for a mount on another host; it requires auth.token.
	// Default false: the block protocol is only on the storage socket.
	ServeStorage bool `yaml:"serve-storage"`
}

// ProxyConfig is the proxy section. The proxy runs only when Addr is set.
type ProxyConfig struct {
	Addr   string `yaml:"addr"`   // host:port to listen on; "" disables the proxy
	Target string `yaml:"target"` // the app's host:port; required with Addr
	DB     string `yaml:"db"`     // database whose position a replica waits for; required with Addr
	// Passthrough paths go to the local app untouched; AlwaysForward paths
	// are forwarded to the primary whatever the method. Patterns match the
	// whole path; '*' (the only wildcard) matches any run of characters.
	Passthrough   []string `yaml:"passthrough"`
	AlwaysForward []string `yaml:"always-forward"`
	// MaxLag is how long a replica waits to catch up before answering 504; > 0, default 10s.
	MaxLag Duration `yaml:"max-lag"`
	// PrimaryRedirectTimeout is how long to wait for a primary to exist; > 0, default 5s.
	PrimaryRedirectTimeout Duration `yaml:"primary-redirect-timeout"`
	// The proxy's HTTP server timeouts, LiteFS's keys and defaults, with
	// net/http's meanings; each >= 0. ReadTimeout bounds reading a whole
	// request, body included (default 0: no limit); ReadHeaderTimeout its
	// headers (default 10s; 0: ReadTimeout's); WriteTimeout writing the
	// response, from the end of the headers (default 0: no limit; a value
	// below max-lag cuts reads waiting for __txid); IdleTimeout a kept-alive
	// connection between requests (default 30s; 0: ReadTimeout's). An
	// upgraded (WebSocket) connection is bound by none of them.
	ReadTimeout       Duration `yaml:"read-timeout"`
	ReadHeaderTimeout Duration `yaml:"read-header-timeout"`
	WriteTimeout      Duration `yaml:"write-timeout"`
	IdleTimeout       Duration `yaml:"idle-timeout"`
	// TrustedProxies lists the addresses (CIDRs such as "10.0.0.0/8", or
	// single IPs) of proxies in front of this one, such as a load balancer,
	// whose X-Forwarded-For, -Host and -Proto the proxy keeps. From any
	// other client they are replaced with what the proxy sees itself.
	// Another node's proxy forwarding a write is trusted without being
	// listed (see proxy.Config). Default: none.
	TrustedProxies []string `yaml:"trusted-proxies"`
}

// TrustedPrefixes returns TrustedProxies as prefixes, a single IP as a
// prefix of its full length. Entries that do not parse (Validate reports
// them) are left out.
func (p ProxyConfig) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(p.TrustedProxies))
	for _, s := range p.TrustedProxies {
		if pfx, err := parsePrefix(s); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// parsePrefix parses a CIDR, or a single IP as a prefix of its full
// length; an IPv4-mapped IPv6 address is taken as the IPv4 address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has a zone", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// LeaseConfig is the lease section: who is primary.
type LeaseConfig struct {
	Type string `yaml:"type"` // LeaseTypeStatic (default) or LeaseTypeConsul
	// Hostname is this node's name as others see it (the .primary file).
	// Unset: with a static lease and candidate false, the host of
	// AdvertiseURL (the primary's); otherwise os.Hostname(). On a static
	// replica it names the primary (as LiteFS's docs use it) until the
	// replica hears the primary's own name, which .primary then shows
	// whatever was written here.
	Hostname string `yaml:"hostname"`
	// AdvertiseURL is this node's API URL; with a static lease and candidate
	// false, the primary's, and then required. Unset otherwise:
	// "http://<hostname>:<port of http.addr>".
	AdvertiseURL string       `yaml:"advertise-url"`
	Candidate    bool         `yaml:"candidate"`    // may become primary; default true
	Promote      bool         `yaml:"promote"`      // a candidate takes the lease once synced
	DemoteDelay  Duration     `yaml:"demote-delay"` // wait after a forced demotion; >= 0, default 10s as LiteFS
	Consul       ConsulConfig `yaml:"consul"`       // used when Type is LeaseTypeConsul
}

// ConsulConfig is lease.consul, used when lease.type is "consul".
type ConsulConfig struct {
	URL       string   `yaml:"url"`        // Consul agent URL, may carry a token; required
	Key       string   `yaml:"key"`        // lock key, unique per cluster; default "litefs/primary"
	TTL       Duration `yaml:"ttl"`        // session TTL; > 0, default 10s
	LockDelay Duration `yaml:"lock-delay"` // Consul lock-delay; >= 0, default 1s
	// CheckTTL (pagewire's own) ties the primary's session to a TTL check
	// the node passes itself every CheckTTL/4, so that a dead primary's
	// lock is freed CheckTTL after its last pass instead of up to twice
	// TTL later; 0: no check (LiteFS's session). Default 2s; otherwise
	// at least 1s and below TTL.
	CheckTTL Duration `yaml:"check-ttl"`
}

// LogConfig is the log section.
type LogConfig struct {
	Format string `yaml:"format"` // LogFormatText (default) or LogFormatJSON
	Debug  bool   `yaml:"debug"`  // log at debug level
}

// ReplicationConfig is the replication section, pagewire's own (DESIGN §7).
type ReplicationConfig struct {
	// SyncReplicas is how many replicas must have applied a transaction before
	// its commit returns; 0 (the default): commits don't wait (async).
	SyncReplicas int `yaml:"sync-replicas"`
	// SyncTimeout bounds a commit's wait for SyncReplicas replicas. 0 (the
	// default): commits wait without limit, so an acknowledged commit is
	// always on SyncReplicas replicas. A positive duration opts in to
	// going on: past it the commit returns, and commits go on
	// asynchronously (logged, and counted in
	// pagewire_sync_replication_timeouts_total) until enough replicas
	// catch up. >= 0.
	SyncTimeout Duration `yaml:"sync-timeout"`
}

// Backup types, the values of backup.type.
const (
	BackupTypeFile  = "file"  // a directory on this machine (or a mounted volume)
	BackupTypeS3    = "s3"    // Amazon S3 or an S3-compatible store (MinIO, SeaweedFS, Tigris, R2, ...)
	BackupTypeGCS   = "gcs"   // Google Cloud Storage
	BackupTypeAzure = "azure" // Azure Blob Storage
	// BackupTypeLiteFSCloud is LiteFS's backup service. LiteFS Cloud closed
	// in October 2024: the type is accepted so that a litefs.yml keeps
	// loading, listed in Config.Ignored, and backs nothing up. Use
	// BackupTypeS3 or BackupTypeFile instead.
	BackupTypeLiteFSCloud = "litefs-cloud"
)

// Defaults and bounds of the backup section.
const (
	DefaultBackupDelay            = 1 * time.Second
	MaxBackupDelay                = 1 * time.Minute
	DefaultBackupRetention        = 24 * time.Hour
	DefaultBackupSnapshotInterval = 24 * time.Hour
	MinBackupRetention            = 1 * time.Minute // also snapshot-interval's minimum
	MaxBackupLevels               = 8
)

// defaultBackupLevels returns backup.levels' default, [30s, 5m, 1h], a new
// slice each time.
func defaultBackupLevels() []Duration {
	return []Duration{Duration(30 * time.Second), Duration(5 * time.Minute), Duration(time.Hour)}
}

// BackupConfig is the backup section, pagewire's own apart from LiteFS's
// type, path and url: continuous backups of every database to a directory
// or to object storage. It is off unless type or url is set.
//
// Where backups go is type plus path (file), type plus bucket and path
// (s3, gcs, azure), or url alone; Kind and Location resolve either form.
type BackupConfig struct {
	// Type is BackupTypeFile, BackupTypeS3, BackupTypeGCS or
	// BackupTypeAzure; "" (the default) is off, or the type url's scheme
	// names. LiteFS's "litefs-cloud" is accepted and ignored (see
	// BackupTypeLiteFSCloud): use "s3" or "file" instead.
	Type string `yaml:"type"`
	// Path is, for type file, the directory backups go in (required; a
	// relative path is taken from the working directory; it must not be in
	// data.dir or fuse.dir). For s3, gcs and azure it is the key prefix
	// inside the bucket: optional (default "": the bucket's top), without a
	// leading "/"; a trailing "/" is dropped.
	Path string `yaml:"path"`
	// URL is LiteFS's key, kept (and ignored) for litefs-cloud. For
	// pagewire's types it replaces bucket and path: "s3://bucket/prefix",
	// "gs://bucket/prefix", "azblob://container/prefix" or "file:///dir",
	// with no query; type may then be left out. It cannot be set with
	// bucket or path.
	URL    string `yaml:"url"`
	Bucket string `yaml:"bucket"` // s3, gcs, azure: the bucket (container) name; required unless url is set
	Region string `yaml:"region"` // s3: the region; "" (default): from AWS_REGION or the AWS config files
	// Endpoint is, for s3, the http:// or https:// URL of an S3-compatible
	// store (MinIO, SeaweedFS, Tigris, R2, ...); "" (default): AWS.
	Endpoint       string `yaml:"endpoint"`
	ForcePathStyle bool   `yaml:"force-path-style"` // s3: path-style addressing, which most S3-compatible stores need
	// AccessKeyID and SecretAccessKey are, for s3, static credentials, set
	// both or neither; unset (default): the usual AWS environment variables
	// and files. SecretAccessKey is a secret: BackupConfig's Format and
	// LogValue redact it, and no error message prints it.
	AccessKeyID     string `yaml:"access-key-id"`
	SecretAccessKey string `yaml:"secret-access-key"`
	// Delay is the most time a commit waits before it is uploaded: more
	// than 0 and at most 1m, default 1s.
	Delay Duration `yaml:"delay"`
	// Retention is how long restore points are kept: at least 1m, default 24h.
	Retention Duration `yaml:"retention"`
	// SnapshotInterval is how often a full snapshot of each database is
	// written: at least 1m, default 24h.
	SnapshotInterval Duration `yaml:"snapshot-interval"`
	// Levels are the compaction levels: uploads are merged into files
	// spanning each level's duration in turn. 1 to 8 durations, strictly
	// increasing, each above delay; default [30s, 5m, 1h].
	Levels []Duration `yaml:"levels"`
	// RestoreOnStart makes a node whose data.dir holds no databases restore
	// every database from the backup before it serves. It requires a backup.
	RestoreOnStart bool `yaml:"restore-on-start"`
}

// backupSchemes maps backup.url's schemes to the backup types they mean.
var backupSchemes = map[string]string{
	"s3":     BackupTypeS3,
	"gs":     BackupTypeGCS,
	"azblob": BackupTypeAzure,
	"file":   BackupTypeFile,
}

// Enabled reports whether backups are on: type or url names one of
// pagewire's backup types (litefs-cloud does not).
func (b BackupConfig) Enabled() bool { return b.Kind() != "" }

// Kind returns the backup type: type when set, else the type url's scheme
// names ("s3", "gs" -> "gcs", "azblob" -> "azure", "file"); "" when backups
// are off, with litefs-cloud too, or when url's scheme is none of those.
func (b BackupConfig) Kind() string {
	switch {
	case b.Type == BackupTypeLiteFSCloud:
		return ""
	case b.Type != "":
		return b.Type
	case b.URL == "":
		return ""
	}
	u, err := url.Parse(b.URL)
	if err != nil {
		return ""
	}
	return backupSchemes[u.Scheme]
}

// Location returns where backups go, from bucket and path or from url.
// For type file, bucket is "" and prefix the directory, made absolute and
// clean; for s3, gcs and azure, the bucket (container) and the key prefix
// inside it, without a leading or trailing "/" ("" for the bucket's top).
// Both are "" when backups are off.
func (b BackupConfig) Location() (bucket, prefix string) {
	kind := b.Kind()
	if kind == "" {
		return "", ""
	}
	bucket, prefix = b.Bucket, b.Path
	if b.URL != "" {
		u, err := url.Parse(b.URL)
		if err != nil {
			return "", ""
		}
		bucket, prefix = u.Host, u.Path
		if kind == BackupTypeFile {
			bucket = ""
		}
	}
	if kind == BackupTypeFile {
		if prefix == "" {
			return "", ""
		}
		return "", absPath(prefix)
	}
	return bucket, strings.Trim(prefix, "/")
}

// redacted stands for a secret in BackupConfig's Format and LogValue.
const redacted = "REDACTED"

// Format prints b as fmt prints a struct, with secret-access-key redacted,
// so that printing a Config (%v, %+v, %#v) shows no secret.
func (b BackupConfig) Format(f fmt.State, verb rune) {
	type plain BackupConfig // without methods, so that Fprintf does not call Format again
	p := plain(b)
	if p.SecretAccessKey != "" {
		p.SecretAccessKey = redacted
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), p)
}

// LogValue logs b as a group of its keys, secret-access-key redacted.
func (b BackupConfig) LogValue() slog.Value {
	secret := ""
	if b.SecretAccessKey != "" {
		secret = redacted
	}
	levels := make([]string, len(b.Levels))
	for i, l := range b.Levels {
		levels[i] = l.String()
	}
	return slog.GroupValue(
		slog.String("type", b.Type),
		slog.String("path", b.Path),
		slog.String("url", b.URL),
		slog.String("bucket", b.Bucket),
		slog.String("region", b.Region),
		slog.String("endpoint", b.Endpoint),
		slog.Bool("force-path-style", b.ForcePathStyle),
		slog.String("access-key-id", b.AccessKeyID),
		slog.String("secret-access-key", secret),
		slog.String("delay", b.Delay.String()),
		slog.String("retention", b.Retention.String()),
		slog.String("snapshot-interval", b.SnapshotInterval.String()),
		slog.Any("levels", levels),
		slog.Bool("restore-on-start", b.RestoreOnStart),
	)
}

// AuthConfig is the auth section: who may call http.addr.
type AuthConfig struct {
	// Token is the bearer token every call that reads or changes data must
	// send ("authorization: Bearer <token>"); in YAML a string, or a list
	// while a token is rotated: every listed token is accepted, and the
	// node sends the first to other nodes. Unset: no auth.
	Token TokenList `yaml:"token"`
	// ProtectMetrics requires the token for /metrics too. /healthz and
	// /primary are always open.
	ProtectMetrics bool `yaml:"protect-metrics"`
}

// MinTokenLength is the shortest auth.token accepted: a token is a
// password a network attacker may guess at.
const MinTokenLength = 16

// TokenList is auth.token: one token or several.
type TokenList []string

// UnmarshalYAML decodes a token string or a list of them.
func (l *TokenList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = TokenList{n.Value}
		return nil
	case yaml.SequenceNode:
		list := make(TokenList, 0, len(n.Content))
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("[%d] must be a token string", i)
			}
			list = append(list, item.Value)
		}
		*l = list
		return nil
	}
	return fmt.Errorf("must be a token string or a list of them")
}

// TLS client-auth modes, the values of tls.client-auth.
const (
	ClientAuthNone    = "none"    // clients show no certificate; the token authenticates them
	ClientAuthRequire = "require" // clients show a certificate signed by tls.ca (mTLS)
)

// TLSConfig is the tls section: TLS on http.addr, and what this node
// trusts when it dials other nodes' https:// URLs. Files are read again
// when they change.
type TLSConfig struct {
	Cert string `yaml:"cert"` // PEM certificate (chain) of http.addr; with Key, the port speaks TLS
	Key  string `yaml:"key"`  // its PEM private key
	// CA is a PEM bundle: the CAs whose certificates this node trusts when
	// it dials https:// URLs (unset: the system's roots), and with
	// client-auth require, that sign its clients' certificates.
	CA         string `yaml:"ca"`
	ClientAuth string `yaml:"client-auth"` // ClientAuthNone (default) or ClientAuthRequire
}

// Enabled reports whether http.addr speaks TLS.
func (t TLSConfig) Enabled() bool { return t.Cert != "" }

// ExecList is the exec key. In YAML it is a single command string, or a list
// whose items are command strings or {cmd, if-candidate} mappings.
type ExecList []ExecCmd

// UnmarshalYAML decodes a command string or a list of commands.
// It does not reject unknown keys in list items; Parse does.
func (l *ExecList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = ExecList{{Cmd: n.Value}}
		return nil
	case yaml.SequenceNode:
		list := make(ExecList, 0, len(n.Content))
		for i, item := range n.Content {
			if item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			var c ExecCmd
			switch item.Kind {
			case yaml.ScalarNode:
				c.Cmd = item.Value
			case yaml.MappingNode:
				if err := item.Decode(&c); err != nil {
					return fmt.Errorf("exec[%d]: %w", i, err)
				}
			default:
				return fmt.Errorf("exec[%d] must be a command string or a mapping with cmd and if-candidate", i)
			}
			list = append(list, c)
		}
		*l = list
		return nil
	default:
		return fmt.Errorf("exec must be a command string or a list of commands")
	}
}

// Duration is a time.Duration written in YAML as a Go duration string such
// as "10s" or "1m30s". A bare number is rejected: it has no unit.
type Duration time.Duration

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a Go duration string. Its error names the bad value.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf(`must be a duration such as "10s", not a %s`, kindName(n.Kind))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf(`%q is not a duration: use a number and a unit, e.g. "10s" or "1m30s"`, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a duration string, so that a Config round-trips.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ByteSize is a size in bytes, written in YAML as a whole number of bytes
// ("1048576") or a whole number with a binary unit: B, KiB, MiB, GiB or
// TiB ("512MiB", "10GiB"; the unit's case does not matter). Decimal units
// (KB, GB) and fractions are rejected rather than guessed at.
type ByteSize int64

// byteUnits are ByteSize's units, largest first.
var byteUnits = []struct {
	name string
	size int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// String writes b in the largest unit that holds it whole, e.g. "32GiB",
// or as a plain number of bytes.
func (b ByteSize) String() string {
	for _, u := range byteUnits[:len(byteUnits)-1] {
		if b != 0 && int64(b)%u.size == 0 {
			return strconv.FormatInt(int64(b)/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// ParseByteSize parses a size as ByteSize's YAML form. Its error says what
// is wrong with s and what is accepted.
func ParseByteSize(s string) (ByteSize, error) {
	const accepted = `use a whole number of bytes, or one with a unit B, KiB, MiB, GiB or TiB, e.g. "512MiB" or "10GiB"`
	num := strings.TrimSpace(s)
	unit := int64(1)
	for _, u := range byteUnits {
		if len(num) > len(u.name) && strings.EqualFold(num[len(num)-len(u.name):], u.name) {
			num, unit = strings.TrimSpace(num[:len(num)-len(u.name)]), u.size
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) || (err == nil && n > math.MaxInt64/unit):
		return 0, fmt.Errorf("%q is too large: a size is at most 8EiB", s)
	case err != nil:
		return 0, fmt.Errorf("%q is not a size: %s", s, accepted)
	case n < 0:
		return 0, fmt.Errorf("%q is negative: %s", s, accepted)
	}
	return ByteSize(n * unit), nil
}

// UnmarshalYAML parses a size (see ByteSize). Its error names the bad value.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf(`must be a size such as "10GiB", not a %s`, kindName(n.Kind))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalYAML writes b as String does, so that a Config round-trips.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// Default returns the configuration `pagewire mount` runs with when no file
// is found: a single-node static primary with fuse.dir ./pagewire/mnt,
// data.dir ./pagewire/data and http.addr 127.0.0.1:20202: loopback only, as
// nothing is configured to protect it. lease.hostname is the host's name
// and lease.advertise-url "http://127.0.0.1:20202". A config file keeps
// LiteFS's :20202.
func Default() Config {
	c := defaults()
	c.HTTP.Addr = DefaultLoopbackHTTPAddr
	c.fillHost()
	c.Lease.AdvertiseURL = "http://" + DefaultLoopbackHTTPAddr
	return c
}

// DefaultLoopbackHTTPAddr is http.addr of the embedded default.
const DefaultLoopbackHTTPAddr = "127.0.0.1:20202"

// defaults is Default without the values that depend on the host or on other
// keys; Parse decodes over it and then calls fillHost.
func defaults() Config {
	return Config{
		FUSE:        FUSEConfig{Dir: DefaultFUSEDir},
		Data:        DataConfig{Dir: DefaultDataDir, Retention: Duration(DefaultRetention), Compress: true, MaxImportSize: DefaultMaxImportSize},
		ExitOnError: true,
		HTTP:        HTTPConfig{Addr: DefaultHTTPAddr},
		Proxy: ProxyConfig{
			MaxLag:                 Duration(DefaultMaxLag),
			PrimaryRedirectTimeout: Duration(DefaultPrimaryRedirectTimeout),
			ReadHeaderTimeout:      Duration(DefaultProxyReadHeaderTimeout),
			IdleTimeout:            Duration(DefaultProxyIdleTimeout),
		},
		Lease: LeaseConfig{
			Type:        LeaseTypeStatic,
			Candidate:   true,
			DemoteDelay: Duration(DefaultDemoteDelay),
			Consul: ConsulConfig{
				Key:       DefaultConsulKey,
				TTL:       Duration(DefaultConsulTTL),
				LockDelay: Duration(DefaultConsulLockDelay),
				CheckTTL:  Duration(DefaultConsulCheckTTL),
			},
		},
		Log:         LogConfig{Format: LogFormatText},
		Replication: ReplicationConfig{SyncTimeout: Duration(DefaultSyncTimeout)},
		Backup: BackupConfig{
			Delay:            Duration(DefaultBackupDelay),
			Retention:        Duration(DefaultBackupRetention),
			SnapshotInterval: Duration(DefaultBackupSnapshotInterval),
			Levels:           defaultBackupLevels(),
		},
	}
}

// osHostname is os.Hostname; tests replace it.
var osHostname = os.Hostname

// fillHost sets lease.hostname and lease.advertise-url when they are unset
// (see LeaseConfig). A static replica's advertise-url is the primary's and
// is never made up; Validate requires it.
func (c *Config) fillHost() {
	staticReplica := c.Lease.Type == LeaseTypeStatic && !c.Lease.Candidate
	if c.Lease.Hostname == "" && staticReplica {
		if u, err := parseHTTPURL(c.Lease.AdvertiseURL); err == nil {
			c.Lease.Hostname = u.Hostname()
		}
	}
	if c.Lease.Hostname == "" {
		h, err := osHostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Lease.Hostname = h
	}
	if c.Lease.AdvertiseURL == "" && !staticReplica {
		// A bad http.addr leaves it unset; Validate reports http.addr.
		if _, port, err := net.SplitHostPort(c.HTTP.Addr); err == nil && port != "" {
			scheme := "http://"
			if c.TLS.Enabled() {
				scheme = "https://"
			}
			c.Lease.AdvertiseURL = scheme + net.JoinHostPort(c.Lease.Hostname, port)
		}
	}
}

// Error is one problem with a configuration: a bad or unknown key, a YAML
// syntax error or a bad environment reference.
type Error struct {
	File string // file name given to Parse; "" when unknown
	Line int    // 1-based line in the file; 0 when unknown
	Key  string // dotted key path such as "lease.consul.url"; "" when no key
	Msg  string // what is wrong and what to do; names Key when there is one
}

// Error returns "file:line: msg", leaving out what is unknown.
func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	default:
		return e.Msg
	}
}
