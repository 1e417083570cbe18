package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const testHostname = "node1"

func TestMain(m *testing.M) {
	osHostname = func() (string, error) { return testHostname, nil }
	os.Exit(m.Run())
}

// env returns a getenv over vars.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// flyEnv is what Fly.io sets on a machine in region, with the primary in "ord".
func flyEnv(region string) func(string) string {
	return env(map[string]string{
		"FLY_REGION":     region,
		"PRIMARY_REGION": "ord",
		"FLY_APP_NAME":   "myapp",
		"FLY_CONSUL_URL": "https://:secret-token@consul-iad.fly-shared.net/myapp-xyz/",
		"HOSTNAME":       "abc123",
	})
}

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"fuse.dir", c.FUSE.Dir, "./pagewire/mnt"},
		{"data.dir", c.Data.Dir, "./pagewire/data"},
		{"data.retention", c.Data.Retention, Duration(10 * time.Minute)},
		{"data.compress", c.Data.Compress, true},
		{"data.max-import-size", c.Data.MaxImportSize, ByteSize(32 << 30)},
		{"exit-on-error", c.ExitOnError, true},
		{"http.addr", c.HTTP.Addr, "127.0.0.1:20202"}, // loopback: nothing protects it
		{"proxy.max-lag", c.Proxy.MaxLag, Duration(10 * time.Second)},
		{"proxy.primary-redirect-timeout", c.Proxy.PrimaryRedirectTimeout, Duration(5 * time.Second)},
		// LiteFS's proxy timeouts: no read or write limit, 10s for headers, 30s idle.
		{"proxy.read-timeout", c.Proxy.ReadTimeout, Duration(0)},
		{"proxy.read-header-timeout", c.Proxy.ReadHeaderTimeout, Duration(10 * time.Second)},
		{"proxy.write-timeout", c.Proxy.WriteTimeout, Duration(0)},
		{"proxy.idle-timeout", c.Proxy.IdleTimeout, Duration(30 * time.Second)},
		{"proxy.trusted-proxies", len(c.Proxy.TrustedProxies), 0},
		{"lease.type", c.Lease.Type, "static"},
		{"lease.candidate", c.Lease.Candidate, true},
		{"lease.hostname", c.Lease.Hostname, testHostname},
		{"lease.advertise-url", c.Lease.AdvertiseURL, "http://127.0.0.1:20202"},
		{"lease.demote-delay", c.Lease.DemoteDelay, Duration(10 * time.Second)},
		{"lease.consul.key", c.Lease.Consul.Key, "litefs/primary"},
		{"lease.consul.ttl", c.Lease.Consul.TTL, Duration(10 * time.Second)},
		{"lease.consul.lock-delay", c.Lease.Consul.LockDelay, Duration(1 * time.Second)},
		{"lease.consul.check-ttl", c.Lease.Consul.CheckTTL, Duration(2 * time.Second)},
		{"log.format", c.Log.Format, "text"},
		{"replication.sync-replicas", c.Replication.SyncReplicas, 0},
		{"replication.sync-timeout", c.Replication.SyncTimeout, Duration(0)},
		{"exec", len(c.Exec), 0},
		{"backup.type", c.Backup.Type, ""},
		{"backup.Enabled", c.Backup.Enabled(), false},
		{"backup.delay", c.Backup.Delay, Duration(time.Second)},
		{"backup.retention", c.Backup.Retention, Duration(24 * time.Hour)},
		{"backup.snapshot-interval", c.Backup.SnapshotInterval, Duration(24 * time.Hour)},
		{"backup.levels", fmt.Sprint(c.Backup.Levels), "[30s 5m0s 1h0m0s]"},
		{"backup.restore-on-start", c.Backup.RestoreOnStart, false},
	} {
		if tt.got != tt.want {
			t.Errorf("%s=%v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Run("LiteFSExample", func(t *testing.T) {
		c, err := Load("testdata/litefs.yml", flyEnv("ord"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		for _, tt := range []struct {
			name      string
			got, want any
		}{
			{"fuse.dir", c.FUSE.Dir, "/litefs"},
			{"data.dir", c.Data.Dir, "/var/lib/litefs"},
			{"data.retention", c.Data.Retention, Duration(10 * time.Minute)},
			{"exit-on-error", c.ExitOnError, false},
			{"proxy.addr", c.Proxy.Addr, ":8080"},
			{"proxy.target", c.Proxy.Target, "localhost:8081"},
			{"proxy.db", c.Proxy.DB, "db"},
			{"proxy.max-lag", c.Proxy.MaxLag, Duration(10 * time.Second)},
			{"lease.type", c.Lease.Type, "consul"},
			{"lease.candidate", c.Lease.Candidate, true},
			{"lease.promote", c.Lease.Promote, true},
			{"lease.hostname", c.Lease.Hostname, testHostname},
			{"lease.advertise-url", c.Lease.AdvertiseURL, "http://abc123.vm.myapp.internal:20202"},
			{"lease.consul.url", c.Lease.Consul.URL, "https://:secret-token@consul-iad.fly-shared.net/myapp-xyz/"},
			{"lease.consul.key", c.Lease.Consul.Key, "litefs/myapp"},
			{"lease.consul.ttl", c.Lease.Consul.TTL, Duration(10 * time.Second)},
			{"http.addr", c.HTTP.Addr, ":20202"}, // a config file keeps LiteFS's default
		} {
			if tt.got != tt.want {
				t.Errorf("%s=%v, want %v", tt.name, tt.got, tt.want)
			}
		}
		if got, want := c.Proxy.Passthrough, []string{"*.ico", "*.png"}; !reflect.DeepEqual(got, want) {
			t.Errorf("proxy.passthrough=%q, want %q", got, want)
		}
		wantExec := ExecList{
			{Cmd: "migrate -database sqlite3:///litefs/db up", IfCandidate: true},
			{Cmd: "myapp -addr :8081 -dsn /litefs/db"},
		}
		if !reflect.DeepEqual(c.Exec, wantExec) {
			t.Errorf("exec=%+v, want %+v", c.Exec, wantExec)
		}
	})

	t.Run("LiteFSExampleInOtherRegion", func(t *testing.T) {
		c, err := Load("testdata/litefs.yml", flyEnv("fra"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got, want := c.Lease.Candidate, false; got != want {
			t.Fatalf("lease.candidate=%v, want %v", got, want)
		}
	})

	t.Run("Missing", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yml"), env(nil))
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err=%v, want os.ErrNotExist", err)
		}
	})

	t.Run("ErrorsNameThePath", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "litefs.yml")
		if err := os.WriteFile(path, []byte("fuse:\n  dirr: /x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, env(nil))
		if err == nil || !strings.HasPrefix(err.Error(), path+":2: ") {
			t.Fatalf("err=%v, want prefix %q", err, path+":2: ")
		}
	})
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name  string
		yaml  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{
			name: "Empty",
			yaml: "",
			check: func(t *testing.T, c Config) {
				if got, want := c.FUSE.Dir, DefaultFUSEDir; got != want {
					t.Errorf("fuse.dir=%q, want %q", got, want)
				}
			},
		},
		{
			name: "OnlyComments",
			yaml: "# nothing here\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.HTTP.Addr, DefaultHTTPAddr; got != want {
					t.Errorf("http.addr=%q, want %q", got, want)
				}
			},
		},
		{
			name: "UnsetKeysKeepDefaults",
			yaml: "data:\n  dir: /data\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Data.Dir, "/data"; got != want {
					t.Errorf("data.dir=%q, want %q", got, want)
				}
				if got, want := c.Data.Retention, Duration(DefaultRetention); got != want {
					t.Errorf("data.retention=%v, want %v", got, want)
				}
				if got, want := c.Data.Compress, true; got != want {
					t.Errorf("data.compress=%v, want %v", got, want)
				}
			},
		},
		{
			name: "ConsulCheckTTL",
			yaml: "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    check-ttl: 0s\n",
			check: func(t *testing.T, c Config) {
				if got := c.Lease.Consul.CheckTTL; got != 0 {
					t.Errorf("lease.consul.check-ttl=%v, want 0 (no check)", got)
				}
			},
		},
		{
			name: "ConsulCheckTTLDefaultWithLiteFSKeys",
			yaml: "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    ttl: 30s\n    lock-delay: 5s\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Lease.Consul.CheckTTL, Duration(DefaultConsulCheckTTL); got != want {
					t.Errorf("lease.consul.check-ttl=%v, want %v", got, want)
				}
			},
		},
		{
			name: "NullKeepsDefault",
			yaml: "data:\n  retention: ~\nfuse:\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Data.Retention, Duration(DefaultRetention); got != want {
					t.Errorf("data.retention=%v, want %v", got, want)
				}
			},
		},
		{
			name: "ExecString",
			yaml: `exec: "myapp -addr :8080"` + "\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Exec, (ExecList{{Cmd: "myapp -addr :8080"}}); !reflect.DeepEqual(got, want) {
					t.Errorf("exec=%+v, want %+v", got, want)
				}
			},
		},
		{
			name: "ExecListOfStrings",
			yaml: "exec:\n  - migrate up\n  - cmd: myapp\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Exec, (ExecList{{Cmd: "migrate up"}, {Cmd: "myapp"}}); !reflect.DeepEqual(got, want) {
					t.Errorf("exec=%+v, want %+v", got, want)
				}
			},
		},
		{
			name: "Durations",
			yaml: "data:\n  retention: 1m30s\nproxy:\n  max-lag: \"250ms\"\nlease:\n  demote-delay: 0s\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Data.Retention, Duration(90*time.Second); got != want {
					t.Errorf("data.retention=%v, want %v", got, want)
				}
				if got, want := c.Proxy.MaxLag, Duration(250*time.Millisecond); got != want {
					t.Errorf("proxy.max-lag=%v, want %v", got, want)
				}
				if got, want := c.Lease.DemoteDelay, Duration(0); got != want {
					t.Errorf("lease.demote-delay=%v, want %v", got, want)
				}
			},
		},
		{
			name: "ProxyTimeouts",
			yaml: "proxy:\n  read-timeout: 1m\n  read-header-timeout: 2s\n  write-timeout: 0s\n  idle-timeout: 90s\n",
			check: func(t *testing.T, c Config) {
				for _, tt := range []struct {
					key       string
					got, want Duration
				}{
					{"proxy.read-timeout", c.Proxy.ReadTimeout, Duration(time.Minute)},
					{"proxy.read-header-timeout", c.Proxy.ReadHeaderTimeout, Duration(2 * time.Second)},
					{"proxy.write-timeout", c.Proxy.WriteTimeout, 0},
					{"proxy.idle-timeout", c.Proxy.IdleTimeout, Duration(90 * time.Second)},
				} {
					if tt.got != tt.want {
						t.Errorf("%s=%v, want %v", tt.key, tt.got, tt.want)
					}
				}
				if len(c.Ignored) != 0 {
					t.Errorf("Ignored=%v, want none: the proxy timeouts are pagewire's keys now", c.Ignored)
				}
			},
		},
		{
			name: "TrustedProxies",
			yaml: "proxy:\n  trusted-proxies:\n    - 10.0.0.0/8\n    - \"fdaa::/16\"\n    - 192.0.2.7\n    - \"::ffff:198.51.100.0/120\"\n    - 2001:db8::1\n",
			check: func(t *testing.T, c Config) {
				var got []string
				for _, p := range c.Proxy.TrustedPrefixes() {
					got = append(got, p.String())
				}
				want := []string{"10.0.0.0/8", "fdaa::/16", "192.0.2.7/32", "198.51.100.0/24", "2001:db8::1/128"}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("TrustedPrefixes()=%q, want %q", got, want)
				}
			},
		},
		{
			name: "AdvertiseURLFollowsHTTPAddr",
			yaml: "http:\n  addr: \"127.0.0.1:3000\"\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Lease.AdvertiseURL, "http://node1:3000"; got != want {
					t.Errorf("lease.advertise-url=%q, want %q", got, want)
				}
			},
		},
		{
			name: "StaticReplicaHostnameFromAdvertiseURL",
			yaml: "lease:\n  candidate: false\n  advertise-url: http://primary.internal:20202\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Lease.Hostname, "primary.internal"; got != want {
					t.Errorf("lease.hostname=%q, want %q", got, want)
				}
				if got, want := c.Lease.AdvertiseURL, "http://primary.internal:20202"; got != want {
					t.Errorf("lease.advertise-url=%q, want %q", got, want)
				}
			},
		},
		{
			name: "EnvDefaultAndLiterals",
			yaml: "lease:\n  hostname: ${NODE:-fallback}\n  candidate: ${FLY_REGION != 'ord'}\n  promote: ${ROLE == \"primary\"}\n",
			env:  map[string]string{"FLY_REGION": "fra", "ROLE": "primary"},
			check: func(t *testing.T, c Config) {
				if got, want := c.Lease.Hostname, "fallback"; got != want {
					t.Errorf("lease.hostname=%q, want %q", got, want)
				}
				if got, want := c.Lease.Candidate, true; got != want {
					t.Errorf("lease.candidate=%v, want %v", got, want)
				}
				if got, want := c.Lease.Promote, true; got != want {
					t.Errorf("lease.promote=%v, want %v", got, want)
				}
			},
		},
		{
			name: "MergeKey",
			yaml: "exec:\n  - &m {cmd: migrate, if-candidate: true}\n  - <<: *m\n    cmd: app\n",
			check: func(t *testing.T, c Config) {
				want := ExecList{{Cmd: "migrate", IfCandidate: true}, {Cmd: "app", IfCandidate: true}}
				if got := c.Exec; !reflect.DeepEqual(got, want) {
					t.Errorf("exec=%+v, want %+v", got, want)
				}
			},
		},
		{
			name: "Replication",
			yaml: "replication:\n  sync-replicas: 2\n  sync-timeout: 0s\nbackup: {}\nauth:\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Replication.SyncTimeout, Duration(0); got != want {
					t.Errorf("replication.sync-timeout=%s, want %s", got, want)
				}
				if got, want := c.Replication.SyncReplicas, 2; got != want {
					t.Errorf("replication.sync-replicas=%d, want %d", got, want)
				}
			},
		},
		{
			name: "BackupS3",
			yaml: "backup:\n  type: s3\n  bucket: my-bucket\n  path: myapp/\n  region: us-east-1\n  endpoint: http://localhost:8333\n  force-path-style: true\n" +
				"  access-key-id: AKIDEXAMPLE\n  secret-access-key: wJalrXUtnFEMI\n  delay: 250ms\n  retention: 72h\n  snapshot-interval: 6h\n  levels: [1s, 1m]\n  restore-on-start: true\n",
			check: func(t *testing.T, c Config) {
				b := c.Backup
				want := BackupConfig{
					Type: "s3", Bucket: "my-bucket", Path: "myapp/", Region: "us-east-1", Endpoint: "http://localhost:8333", ForcePathStyle: true,
					AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI", Delay: Duration(250 * time.Millisecond),
					Retention: Duration(72 * time.Hour), SnapshotInterval: Duration(6 * time.Hour),
					Levels: []Duration{Duration(time.Second), Duration(time.Minute)}, RestoreOnStart: true,
				}
				if !reflect.DeepEqual(b, want) {
					t.Errorf("backup=%+v, want %+v", b, want)
				}
				if !b.Enabled() || b.Kind() != BackupTypeS3 {
					t.Errorf("Enabled()=%v Kind()=%q, want true, \"s3\"", b.Enabled(), b.Kind())
				}
				if bucket, prefix := b.Location(); bucket != "my-bucket" || prefix != "myapp" {
					t.Errorf("Location()=%q, %q, want \"my-bucket\", \"myapp\"", bucket, prefix)
				}
				if len(c.Ignored) != 0 {
					t.Errorf("Ignored=%v, want none", c.Ignored)
				}
			},
		},
		{
			name: "BackupURLSetsType",
			yaml: "backup:\n  url: gs://my-bucket/a/b/\n",
			check: func(t *testing.T, c Config) {
				b := c.Backup
				if !b.Enabled() || b.Kind() != BackupTypeGCS || b.Type != "" {
					t.Errorf("Enabled()=%v Kind()=%q Type=%q, want true, \"gcs\", \"\"", b.Enabled(), b.Kind(), b.Type)
				}
				if bucket, prefix := b.Location(); bucket != "my-bucket" || prefix != "a/b" {
					t.Errorf("Location()=%q, %q, want \"my-bucket\", \"a/b\"", bucket, prefix)
				}
			},
		},
		{
			name: "BackupFile",
			yaml: "backup:\n  type: file\n  path: backups/\n",
			check: func(t *testing.T, c Config) {
				wd, err := os.Getwd()
				if err != nil {
					t.Fatal(err)
				}
				if bucket, dir := c.Backup.Location(); bucket != "" || dir != filepath.Join(wd, "backups") {
					t.Errorf("Location()=%q, %q, want \"\", %q (made absolute)", bucket, dir, filepath.Join(wd, "backups"))
				}
			},
		},
		{
			name: "BackupFileURL",
			yaml: "backup:\n  type: file\n  url: file:///mnt/backups/\n",
			check: func(t *testing.T, c Config) {
				if bucket, dir := c.Backup.Location(); c.Backup.Kind() != BackupTypeFile || bucket != "" || dir != "/mnt/backups" {
					t.Errorf("Kind()=%q Location()=%q, %q, want \"file\", \"\", \"/mnt/backups\"", c.Backup.Kind(), bucket, dir)
				}
			},
		},
		{
			name: "BackupEnv",
			yaml: "backup:\n  type: ${BACKUP_TYPE:-s3}\n  bucket: ${BACKUP_BUCKET}\n  secret-access-key: $AWS_SECRET\n  access-key-id: ${AWS_KEY}\n",
			env:  map[string]string{"BACKUP_BUCKET": "prod-backups", "AWS_SECRET": "s3cr3t", "AWS_KEY": "AKID"},
			check: func(t *testing.T, c Config) {
				b := c.Backup
				if b.Type != "s3" || b.Bucket != "prod-backups" || b.SecretAccessKey != "s3cr3t" || b.AccessKeyID != "AKID" {
					t.Errorf("backup type=%q bucket=%q access-key-id=%q secret set=%v, want s3, prod-backups, AKID, true",
						b.Type, b.Bucket, b.AccessKeyID, b.SecretAccessKey == "s3cr3t")
				}
			},
		},
		{
			name: "BackupUnsetEnvIsOff",
			yaml: "backup:\n  type: ${BACKUP_TYPE}\n",
			check: func(t *testing.T, c Config) {
				if c.Backup.Enabled() {
					t.Errorf("backup enabled with an empty type: %+v", c.Backup)
				}
			},
		},
		{
			name: "AliasAndMerge",
			yaml: "fuse: &f\n  dir: /litefs\n  debug: true\ndata:\n  dir: /var/lib/litefs\nproxy:\n  passthrough: &p [\"*.ico\"]\n  always-forward: *p\n",
			check: func(t *testing.T, c Config) {
				if got, want := c.Proxy.AlwaysForward, []string{"*.ico"}; !reflect.DeepEqual(got, want) {
					t.Errorf("proxy.always-forward=%q, want %q", got, want)
				}
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "litefs.yml", env(tt.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestParse_UnknownKey(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{
			name: "Typo",
			yaml: "# comment\nfuse:\n  dirr: /litefs\n",
			want: []string{`litefs.yml:3: unknown key "fuse.dirr"`, `did you mean "fuse.dir"?`},
		},
		{
			name: "Nested",
			yaml: "lease:\n  type: consul\n  consul:\n    url: http://x\n    token: abc\n",
			want: []string{`litefs.yml:5: unknown key "lease.consul.token"`, "url, key, ttl, lock-delay"},
		},
		{
			name: "TopLevel",
			yaml: "fuse:\n  dir: /a\nmystery: 1\n",
			want: []string{`litefs.yml:3: unknown key "mystery"`, "the top level takes fuse, data"},
		},
		{
			name: "ExecItem",
			yaml: "exec:\n  - cmd: a\n  - cmd: b\n    if-candidat: true\n",
			want: []string{`litefs.yml:4: unknown key "exec[1].if-candidat"`, `did you mean "exec[1].if-candidate"?`},
		},
		{
			name: "Backup",
			yaml: "backup:\n  type: s3\n  buckit: x\n",
			want: []string{`litefs.yml:3: unknown key "backup.buckit"`, `did you mean "backup.bucket"?`},
		},
		{
			name: "BackupNotLiteFSKey",
			yaml: "backup:\n  type: s3\n  bucket: b\n  delay-max: 1s\n",
			want: []string{`litefs.yml:4: unknown key "backup.delay-max": backup takes type, path, url, bucket, region`},
		},
		{
			name: "LiteFSCloudClusterWithS3",
			yaml: "backup:\n  type: s3\n  bucket: b\n  cluster: my-cluster\n",
			want: []string{`litefs.yml:4: backup.cluster is a LiteFS Cloud key`, `backup.type "litefs-cloud"`, "remove it"},
		},
		{
			name: "LiteFSCloudAuthTokenWithoutType",
			yaml: "backup:\n  auth-token: FlyV1 abc\n",
			want: []string{`litefs.yml:2: backup.auth-token is a LiteFS Cloud key`},
		},
		{
			name: "XPrefixIsNotSpecial",
			yaml: "x-dirs: &dirs\n  dir: /litefs\n",
			want: []string{`litefs.yml:1: unknown key "x-dirs"`},
		},
		{
			name: "UnderMergeKey",
			yaml: "exec:\n  - <<: {cmdd: x}\n",
			want: []string{`litefs.yml:2: unknown key "exec[0].cmdd"`},
		},
		{
			name: "AllReported",
			yaml: "fuse:\n  dirr: /a\ndata:\n  dri: /b\n",
			want: []string{`litefs.yml:2: unknown key "fuse.dirr"`, `litefs.yml:4: unknown key "data.dri"`},
		},
		{
			name: "Twice",
			yaml: "fuse:\n  dir: /a\n  dir: /b\n",
			want: []string{`litefs.yml:3: fuse.dir is set twice, on lines 2 and 3: keep one`},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "litefs.yml", env(nil))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err=%q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParse_BadValue(t *testing.T) {
	const dirs = "fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\n" // lines 1-4
	for _, tt := range []struct {
		name string
		yaml string
		key  string // Error.Key of the first error
		line int    // Error.Line of the first error
		want string // a substring of the message
	}{
		{"BadDuration", dirs + "proxy:\n  max-lag: 10x\n", "proxy.max-lag", 6, `proxy.max-lag "10x" is not a duration`},
		{"NumberAsDuration", "data:\n  retention: 10\n", "data.retention", 2, `data.retention "10" is not a duration`},
		{"ListAsDuration", "lease:\n  consul:\n    ttl: [1]\n", "lease.consul.ttl", 3, "lease.consul.ttl must be a duration"},
		{"ZeroRetention", "data:\n  retention: 0s\n", "data.retention", 2, "data.retention is 0s: use a positive duration"},
		{"BadByteSize", "data:\n  max-import-size: 10GB\n", "data.max-import-size", 2, `data.max-import-size "10GB" is not a size: use a whole number of bytes, or one with a unit`},
		{"ZeroMaxImportSize", "data:\n  max-import-size: 0\n", "data.max-import-size", 2, `data.max-import-size is 0: use a positive size such as "32GiB"`},
		{"BadLeaseType", "lease:\n  type: zookeeper\n", "lease.type", 2, `lease.type "zookeeper" is not supported: use "static" or "consul"`},
		{"BadHTTPAddr", "http:\n  addr: localhost\n", "http.addr", 2, `http.addr "localhost" is not host:port`},
		{"NegativeSyncReplicas", "replication:\n  sync-replicas: -1\n", "replication.sync-replicas", 2, "replication.sync-replicas is -1"},
		{"NegativeSyncTimeout", "replication:\n  sync-timeout: -1s\n", "replication.sync-timeout", 2, "replication.sync-timeout is -1s"},
		{"NotANumber", "replication:\n  sync-replicas: two\n", "replication.sync-replicas", 2, `"two" is not a whole number`},
		{"NotABool", "fuse:\n  allow-other: maybe\n", "fuse.allow-other", 2, `fuse.allow-other "maybe" is not a boolean`},
		{"MappingAsString", "fuse:\n  dir: {a: b}\n", "fuse.dir", 2, "fuse.dir must be a single value"},
		{"SectionNotMapping", "fuse: /litefs\n", "fuse", 1, "fuse must be a mapping of keys (dir, allow-other, debug)"},
		{"MissingConsulURL", "lease:\n  type: consul\n", "lease.consul.url", 1, "lease.consul.url is not set"},
		{"EmptyConsulKey", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    key: \"\"\n", "lease.consul.key", 5, "lease.consul.key is not set"},
		{"ZeroConsulTTL", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    ttl: 0s\n", "lease.consul.ttl", 5, "lease.consul.ttl is 0s"},
		{"NegativeLockDelay", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    lock-delay: -1s\n", "lease.consul.lock-delay", 5, "lease.consul.lock-delay is -1s"},
		{"NegativeCheckTTL", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    check-ttl: -1s\n", "lease.consul.check-ttl", 5, "lease.consul.check-ttl is -1s: use 0 (no check)"},
		{"ShortCheckTTL", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    check-ttl: 200ms\n", "lease.consul.check-ttl", 5, "lease.consul.check-ttl is 200ms"},
		{"CheckTTLNotBelowTTL", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    ttl: 10s\n    check-ttl: 10s\n", "lease.consul.check-ttl", 6, "below lease.consul.ttl (10s)"},
		{"CheckTTLNotADuration", "lease:\n  type: consul\n  consul:\n    url: http://localhost:8500\n    check-ttl: soon\n", "lease.consul.check-ttl", 5, `lease.consul.check-ttl "soon" is not a duration`},
		{"SameDirs", "fuse:\n  dir: /litefs\ndata:\n  dir: /litefs/\n", "data.dir", 4, "data.dir \"/litefs/\" is the same directory as fuse.dir"},
		{"DataInsideFUSE", "fuse:\n  dir: /litefs\ndata:\n  dir: /litefs/data\n", "data.dir", 4, "is inside fuse.dir"},
		{"FUSEInsideData", "fuse:\n  dir: /var/lib/litefs/mnt\ndata:\n  dir: /var/lib/litefs\n", "fuse.dir", 2, "is inside data.dir"},
		{"EmptyFUSEDir", "fuse:\n  dir: \"\"\n", "fuse.dir", 2, "fuse.dir is not set"},
		{"StaticReplicaWithoutAdvertiseURL", "lease:\n  type: static\n  candidate: false\n", "lease.advertise-url", 1, "lease.advertise-url is not set"},
		{"BadAdvertiseURL", "lease:\n  advertise-url: primary:20202\n", "lease.advertise-url", 2, "is not an http or https URL"},
		{"ProxyWithoutTarget", "proxy:\n  addr: \":8080\"\n  db: db\n", "proxy.target", 1, "proxy.target is not set"},
		{"ProxyWithoutDB", "proxy:\n  addr: \":8080\"\n  target: localhost:8081\n", "proxy.db", 1, "proxy.db is not set"},
		{"ProxyTargetWithoutAddr", "proxy:\n  target: localhost:8081\n", "proxy.target", 2, "proxy.target is set but proxy.addr is not"},
		{"BadPassthrough", "proxy:\n  passthrough: [\"*.png\", \"\"]\n", "proxy.passthrough[1]", 2, `proxy.passthrough[1] is empty`},
		{"ZeroMaxLag", "proxy:\n  max-lag: 0s\n", "proxy.max-lag", 2, "proxy.max-lag is 0s"},
		{"NegativeReadTimeout", "proxy:\n  read-timeout: -1s\n", "proxy.read-timeout", 2, "proxy.read-timeout is -1s: use 0 or a positive duration"},
		{"NegativeReadHeaderTimeout", "proxy:\n  max-lag: 5s\n  read-header-timeout: -10s\n", "proxy.read-header-timeout", 3, "proxy.read-header-timeout is -10s"},
		{"NegativeWriteTimeout", "proxy:\n  write-timeout: -1ms\n", "proxy.write-timeout", 2, "proxy.write-timeout is -1ms"},
		{"NegativeIdleTimeout", "proxy:\n  idle-timeout: -30s\n", "proxy.idle-timeout", 2, "proxy.idle-timeout is -30s"},
		{"BadIdleTimeout", "proxy:\n  idle-timeout: 30\n", "proxy.idle-timeout", 2, `proxy.idle-timeout "30" is not a duration`},
		{"BadTrustedProxy", "proxy:\n  trusted-proxies:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n", "proxy.trusted-proxies[1]", 4, `proxy.trusted-proxies[1] "10.0.0.0/33" is not a CIDR or an IP address`},
		{"HostnameAsTrustedProxy", "proxy:\n  trusted-proxies: [lb.internal]\n", "proxy.trusted-proxies[0]", 2, `"lb.internal" is not a CIDR or an IP address`},
		{"TrustedProxiesNotAList", "proxy:\n  trusted-proxies: 10.0.0.0/8\n", "proxy.trusted-proxies", 2, "proxy.trusted-proxies must be a list"},
		{"BadLogFormat", "log:\n  format: xml\n", "log.format", 2, `log.format "xml" is not supported`},
		{"EmptyExec", "exec: \"${APP}\"\n", "exec[0].cmd", 1, "exec[0].cmd is empty"},
		{"ExecMapping", "exec:\n  cmd: myapp\n", "exec", 2, "exec must be a command string or a list"},
		{"NegativeDemoteDelay", "lease:\n  demote-delay: -5s\n", "lease.demote-delay", 2, "lease.demote-delay is -5s"},
		{"EmptyToken", "auth:\n  token: \"${UNSET_TOKEN}\"\n", "auth.token", 2, "auth.token is empty (an unset environment variable?)"},
		{"ShortToken", "auth:\n  token: hunter2\n", "auth.token", 2, "auth.token is 7 characters, fewer than 16"},
		{"TokenWithSpace", "auth:\n  token: \"0123456789abcdef 0123\"\n", "auth.token", 2, "contains whitespace"},
		{"EmptyTokenInList", "auth:\n  token:\n    - 0123456789abcdef0123\n    - \"\"\n", "auth.token", 2, "auth.token[1] is empty"},
		{"TokenMapping", "auth:\n  token: {a: b}\n", "auth.token", 2, "must be a token string or a list"},
		{"ServeStorageWithoutToken", "http:\n  serve-storage: true\n", "http.serve-storage", 2, "requires auth.token"},
		{"ProtectMetricsWithoutToken", "auth:\n  protect-metrics: true\n", "auth.protect-metrics", 2, "needs auth.token"},
		{"CertWithoutKey", "tls:\n  cert: /etc/pagewire/tls.crt\n", "tls.key", 1, "tls.cert and tls.key go together"},
		{"BadClientAuth", "tls:\n  client-auth: optional\n", "tls.client-auth", 2, `tls.client-auth "optional" is not supported`},
		{"RequireWithoutCA", "tls:\n  cert: /c\n  key: /k\n  client-auth: require\n", "tls.client-auth", 4, "needs tls.cert, tls.key and tls.ca"},
		{"PlainAdvertiseWithTLS", "tls:\n  cert: /c\n  key: /k\nlease:\n  advertise-url: http://a:20202\n", "lease.advertise-url", 5, "use https://"},
		{"Unclosed", "fuse:\n  dir: ${DIR\n", "", 2, `"${DIR" has no closing "}"`},
		{"BadSyntax", "fuse:\n  dir: /a\n dir: /b\n", "", 2, "invalid YAML"},
		{"TopLevelList", "- a\n- b\n", "", 1, "the file must be a mapping"},
		{"TwoDocuments", "fuse:\n  dir: /a\n---\nfuse:\n  dir: /b\n", "", 3, "more than one YAML document"},
		{"BackupBadType", "backup:\n  type: ftp\n", "backup.type", 2, `backup.type "ftp" is not supported: use "file", "s3", "gcs" or "azure"`},
		{"BackupFileWithoutPath", "backup:\n  type: file\n", "backup.path", 1, `backup.path is not set: with backup.type "file" set it to the directory`},
		{"BackupS3WithoutBucket", "backup:\n  type: s3\n", "backup.bucket", 1, `backup.bucket is not set: with backup.type "s3" set it to the bucket's name, or set backup.url instead, e.g. "s3://`},
		{"BackupAzureWithoutBucket", "backup:\n  type: azure\n  path: myapp\n", "backup.bucket", 1, `e.g. "azblob://my-container/myapp"`},
		{"BackupBucketWithSlash", "backup:\n  type: s3\n  bucket: my-bucket/myapp\n", "backup.bucket", 3, `backup.bucket "my-bucket/myapp" holds a "/"`},
		{"BackupPrefixLeadingSlash", "backup:\n  type: gcs\n  bucket: b\n  path: /myapp\n", "backup.path", 4, `backup.path "/myapp" starts with "/"`},
		{"BackupBucketWithFile", "backup:\n  type: file\n  path: /mnt/backups\n  bucket: b\n", "backup.bucket", 4, `backup.bucket is for types "s3", "gcs" and "azure"`},
		{"BackupBucketWithoutType", "backup:\n  bucket: b\n", "backup.bucket", 2, `backup.bucket is set but backups are off: set backup.type`},
		{"BackupURLBadScheme", "backup:\n  url: https://example.com/backups\n", "backup.url", 2, `backup.url "https://example.com/backups" has the scheme "https", which is not a backup's: use "s3://bucket/prefix"`},
		{"BackupURLAndBucket", "backup:\n  url: s3://b/myapp\n  bucket: b\n", "backup.bucket", 3, "backup.bucket and backup.url are both set"},
		{"BackupURLAndPath", "backup:\n  url: file:///mnt/backups\n  path: /mnt/backups\n", "backup.path", 3, "backup.path and backup.url are both set"},
		{"BackupURLTypeMismatch", "backup:\n  type: gcs\n  url: s3://b/myapp\n", "backup.url", 3, `is a "s3" URL, and backup.type is "gcs": make them agree`},
		{"BackupURLQuery", "backup:\n  url: s3://b/myapp?region=us-east-1\n", "backup.url", 2, "carries options (a query, user info or a fragment): remove them"},
		{"BackupURLNoBucket", "backup:\n  url: s3:///myapp\n", "backup.url", 2, "names no bucket"},
		{"BackupFileURLRelative", "backup:\n  url: file://backups\n", "backup.url", 2, `use "file:///dir"`},
		{"BackupEndpointNotHTTP", "backup:\n  type: s3\n  bucket: b\n  endpoint: localhost:8333\n", "backup.endpoint", 4, `backup.endpoint "localhost:8333" is not an http or https URL`},
		{"BackupRegionWithGCS", "backup:\n  type: gcs\n  bucket: b\n  region: us-east-1\n", "backup.region", 4, `backup.region is for backup.type "s3" only, and the backup type is "gcs"`},
		{"BackupEndpointWithAzureURL", "backup:\n  url: azblob://c/myapp\n  endpoint: http://localhost:10000\n", "backup.endpoint", 3, `backup.endpoint is for backup.type "s3" only, and the backup type is "azure"`},
		{"BackupForcePathStyleWithFile", "backup:\n  type: file\n  path: /mnt/backups\n  force-path-style: true\n", "backup.force-path-style", 4, `backup.force-path-style is for backup.type "s3" only`},
		{"BackupAccessKeyWithGCS", "backup:\n  type: gcs\n  bucket: b\n  access-key-id: AKID\n  secret-access-key: s\n", "backup.access-key-id", 4, `backup.access-key-id is for backup.type "s3" only`},
		{"BackupAccessKeyWithoutSecret", "backup:\n  type: s3\n  bucket: b\n  access-key-id: AKID\n", "backup.secret-access-key", 1, "backup.secret-access-key is not set but backup.access-key-id is: set both"},
		{"BackupSecretWithoutAccessKey", "backup:\n  type: s3\n  bucket: b\n  secret-access-key: s\n", "backup.access-key-id", 1, "backup.access-key-id is not set but backup.secret-access-key is: set both"},
		{"BackupZeroDelay", "backup:\n  delay: 0s\n", "backup.delay", 2, `backup.delay is 0s: use a duration above 0 and at most 1m0s, such as "1s"`},
		{"BackupLongDelay", "backup:\n  delay: 2m\n", "backup.delay", 2, "backup.delay is 2m0s"},
		{"BackupShortRetention", "backup:\n  retention: 30s\n", "backup.retention", 2, `backup.retention is 30s: use at least 1m0s, such as "24h0m0s"`},
		{"BackupShortSnapshotInterval", "backup:\n  snapshot-interval: 10s\n", "backup.snapshot-interval", 2, "backup.snapshot-interval is 10s: use at least 1m0s"},
		{"BackupLevelsNotIncreasing", "backup:\n  levels: [30s, 1h, 5m]\n", "backup.levels[2]", 2, "backup.levels[2] is 5m0s, not above backup.levels[1] (1h0m0s): list the levels in increasing order"},
		{"BackupLevelNotAboveDelay", "backup:\n  delay: 10s\n  levels:\n    - 10s\n    - 1m\n", "backup.levels[0]", 4, "backup.levels[0] is 10s, not above backup.delay (10s)"},
		{"BackupLevelsEmpty", "backup:\n  levels: []\n", "backup.levels", 2, "backup.levels is empty"},
		{"BackupTooManyLevels", "backup:\n  levels: [1m, 2m, 3m, 4m, 5m, 6m, 7m, 8m, 9m]\n", "backup.levels", 2, "backup.levels lists 9 levels, more than 8"},
		{"BackupLevelNotADuration", "backup:\n  levels: [30s, 5]\n", "backup.levels[1]", 2, `backup.levels[1] "5" is not a duration`},
		{"RestoreOnStartWithoutBackup", "backup:\n  restore-on-start: true\n", "backup.restore-on-start", 2, "backup.restore-on-start needs a backup to restore from, and backups are off"},
		{"RestoreOnStartWithLiteFSCloud", "backup:\n  type: litefs-cloud\n  restore-on-start: true\n", "backup.restore-on-start", 3, `backup.type "litefs-cloud" is ignored (LiteFS Cloud closed in October 2024): use backup.type "s3" or "file" instead`},
		{"BackupPathInDataDir", dirs + "backup:\n  type: file\n  path: /var/lib/litefs/backups\n", "backup.path", 7, `backup.path "/var/lib/litefs/backups" is in data.dir "/var/lib/litefs": backups there are lost with the node`},
		{"BackupPathIsDataDir", "data:\n  dir: ./data\nbackup:\n  type: file\n  path: data/\n", "backup.path", 5, "is in data.dir"},
		{"BackupPathInFUSEDir", dirs + "backup:\n  type: file\n  path: /litefs/backups\n", "backup.path", 7, `backup.path "/litefs/backups" is in fuse.dir "/litefs", the mount apps see`},
		{"BackupFileURLInDataDir", dirs + "backup:\n  url: file:///var/lib/litefs/b\n", "backup.url", 6, "backup.url \"file:///var/lib/litefs/b\" is in data.dir"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "litefs.yml", env(nil))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err=%q (%T), want a *Error", err, err)
			}
			if got, want := e.Key, tt.key; got != want {
				t.Errorf("Key=%q, want %q (err=%q)", got, want, err)
			}
			if got, want := e.Line, tt.line; got != want {
				t.Errorf("Line=%d, want %d (err=%q)", got, want, err)
			}
			if !strings.Contains(e.Msg, tt.want) {
				t.Errorf("Msg=%q, want it to contain %q", e.Msg, tt.want)
			}
			if tt.key != "" && !strings.Contains(e.Msg, tt.key) {
				t.Errorf("Msg=%q does not name the key %q", e.Msg, tt.key)
			}
		})
	}
}

func TestParse_ConsulURLNotPrinted(t *testing.T) {
	const token = "s3cr3t"
	y := "lease:\n  type: consul\n  consul:\n    url: \"consul.internal:8500/?token=" + token + "\"\n"
	_, err := Parse([]byte(y), "litefs.yml", env(nil))
	if err == nil {
		t.Fatal("Parse succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "lease.consul.url") {
		t.Errorf("err=%q, want it to name lease.consul.url", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("err=%q prints the token", err)
	}
}

func TestParse_Aliases(t *testing.T) {
	// A "billion laughs" file under known keys: each level merges nine
	// copies of the level below, so data expands to 9^9 mappings.
	level := "&d0 {dir: /d}"
	for i := 1; i <= 9; i++ {
		prev := fmt.Sprintf("*d%d", i-1)
		level = fmt.Sprintf("&d%d {<<: [%s%s]}", i, level, strings.Repeat(", "+prev, 8))
	}
	y := "fuse:\n  dir: /litefs\ndata: " + level + "\n"

	done := make(chan error, 1)
	go func() {
		_, err := Parse([]byte(y), "litefs.yml", env(nil))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "too many values") {
			t.Fatalf("err=%v, want it to contain %q", err, "too many values")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Parse did not return")
	}

	t.Run("SelfMerge", func(t *testing.T) {
		_, err := Parse([]byte("data: &a {dir: /d, <<: *a}\n"), "litefs.yml", env(nil))
		if want := "litefs.yml:1: data uses an alias inside its own anchor &a"; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err=%v, want it to contain %q", err, want)
		}
	})
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := filepath.Join(dir, "a", "pagewire.yml")
	second := write("b/litefs.yml")
	third := write("c/pagewire.yml")
	if err := os.MkdirAll(filepath.Join(dir, "d", "litefs.yml"), 0o755); err != nil {
		t.Fatal(err)
	}
	isDir := filepath.Join(dir, "d", "litefs.yml")

	for _, tt := range []struct {
		name     string
		search   []string
		explicit string
		want     string
		wantErr  string
	}{
		{name: "FirstExisting", search: []string{first, second, third}, want: second},
		{name: "SkipsDirectories", search: []string{isDir, third}, want: third},
		{name: "None", search: []string{first, isDir}, want: ""},
		{name: "Explicit", search: []string{second}, explicit: third, want: third},
		{name: "ExplicitMissing", search: []string{second}, explicit: first, wantErr: "does not exist: check the -config path"},
		{name: "ExplicitDirectory", search: []string{second}, explicit: isDir, wantErr: "is a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := searchPaths
			searchPaths = tt.search
			t.Cleanup(func() { searchPaths = old })

			got, err := Find(tt.explicit)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if got != tt.want {
				t.Fatalf("path=%q, want %q", got, tt.want)
			}
		})
	}

	t.Run("DefaultOrder", func(t *testing.T) {
		want := []string{"pagewire.yml", "litefs.yml", "/etc/pagewire.yml", "/etc/litefs.yml"}
		if !reflect.DeepEqual(searchPaths, want) {
			t.Fatalf("searchPaths=%q, want %q", searchPaths, want)
		}
	})
}

func TestConfig_Validate(t *testing.T) {
	t.Run("AllErrors", func(t *testing.T) {
		c := Default()
		c.Lease.Type = "zookeeper"
		c.Log.Format = "xml"
		err := c.Validate()
		if err == nil {
			t.Fatal("Validate succeeded, want an error")
		}
		for _, w := range []string{`lease.type "zookeeper"`, `log.format "xml"`} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("err=%q, want it to contain %q", err, w)
			}
		}
	})

	t.Run("NoFileNoLine", func(t *testing.T) {
		c := Default()
		c.Replication.SyncReplicas = -2
		err := c.Validate()
		if err == nil {
			t.Fatal("Validate succeeded, want an error")
		}
		if got, want := err.Error(), "replication.sync-replicas is -2: "; !strings.HasPrefix(got, want) {
			t.Fatalf("err=%q, want prefix %q", got, want)
		}
	})

	t.Run("ZeroConfig", func(t *testing.T) {
		var c Config
		if err := c.Validate(); err == nil {
			t.Fatal("Validate of a zero Config succeeded, want an error")
		}
	})

	t.Run("StaticReplica", func(t *testing.T) {
		c := Default()
		c.Lease.Candidate = false
		c.Lease.AdvertiseURL = "http://primary:20202"
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
	})
}

func TestDuration_UnmarshalYAML(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Duration
		wantErr string
	}{
		{in: "10s", want: Duration(10 * time.Second)},
		{in: `"1m30s"`, want: Duration(90 * time.Second)},
		{in: "0", want: 0},
		{in: "-2ms", want: Duration(-2 * time.Millisecond)},
		{in: "10", wantErr: `"10" is not a duration`},
		{in: "soon", wantErr: `"soon" is not a duration`},
		{in: "{a: 1}", wantErr: "must be a duration"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := yaml.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if d != tt.want {
				t.Fatalf("d=%v, want %v", d, tt.want)
			}
		})
	}

	t.Run("RoundTrip", func(t *testing.T) {
		out, err := yaml.Marshal(struct {
			D Duration `yaml:"d"`
		}{Duration(90 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(out), "d: 1m30s\n"; got != want {
			t.Fatalf("Marshal=%q, want %q", got, want)
		}
	})
}

func TestByteSize_UnmarshalYAML(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "1048576", want: 1 << 20},
		{in: "0", want: 0},
		{in: "512MiB", want: 512 << 20},
		{in: `"10GiB"`, want: 10 << 30},
		{in: "10 gib", want: 10 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "64KiB", want: 64 << 10},
		{in: "100B", want: 100},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "10GB", wantErr: `"10GB" is not a size: use a whole number of bytes, or one with a unit B, KiB, MiB, GiB or TiB`},
		{in: "1.5GiB", wantErr: `"1.5GiB" is not a size`},
		{in: "GiB", wantErr: `"GiB" is not a size`},
		{in: "-1MiB", wantErr: `"-1MiB" is negative`},
		{in: "8388608TiB", wantErr: `"8388608TiB" is too large`},
		{in: "99999999999999999999", wantErr: "is too large"},
		{in: "[1]", wantErr: "must be a size"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			var b ByteSize
			err := yaml.Unmarshal([]byte(tt.in), &b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if b != tt.want {
				t.Fatalf("b=%d, want %d", b, tt.want)
			}
		})
	}

	t.Run("RoundTrip", func(t *testing.T) {
		for _, b := range []ByteSize{32 << 30, 1 << 20, 1536 << 10, 1000, 0} {
			out, err := yaml.Marshal(struct {
				B ByteSize `yaml:"b"`
			}{b})
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				B ByteSize `yaml:"b"`
			}
			if err := yaml.Unmarshal(out, &back); err != nil || back.B != b {
				t.Fatalf("%d marshals as %q and comes back as %d (%v)", b, out, back.B, err)
			}
		}
		if got, want := ByteSize(32<<30).String(), "32GiB"; got != want {
			t.Fatalf("String=%q, want %q", got, want)
		}
	})
}

func TestExecList_UnmarshalYAML(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      string
		want    ExecList
		wantErr string
	}{
		{name: "String", in: "myapp serve", want: ExecList{{Cmd: "myapp serve"}}},
		{name: "List", in: "[{cmd: migrate, if-candidate: true}, {cmd: app}]", want: ExecList{{Cmd: "migrate", IfCandidate: true}, {Cmd: "app"}}},
		{name: "ListOfStrings", in: "[a, b]", want: ExecList{{Cmd: "a"}, {Cmd: "b"}}},
		{name: "Mapping", in: "{cmd: app}", wantErr: "exec must be a command string or a list"},
		{name: "NestedList", in: "[[a]]", wantErr: "exec[0] must be"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var l ExecList
			err := yaml.Unmarshal([]byte(tt.in), &l)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(l, tt.want) {
				t.Fatalf("exec=%+v, want %+v", l, tt.want)
			}
		})
	}
}

func TestError_Error(t *testing.T) {
	for _, tt := range []struct {
		err  Error
		want string
	}{
		{Error{File: "litefs.yml", Line: 7, Msg: "m"}, "litefs.yml:7: m"},
		{Error{File: "litefs.yml", Msg: "m"}, "litefs.yml: m"},
		{Error{Line: 3, Msg: "m"}, "line 3: m"},
		{Error{Msg: "m"}, "m"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Fatalf("Error()=%q, want %q", got, tt.want)
			}
		})
	}
}

// A LiteFS key pagewire has no use for loads, and is listed as ignored with
// its line, so that an existing litefs.yml keeps working.
func TestParse_IgnoresLiteFSOnlyKeys(t *testing.T) {
	yml := "fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\n  retention-monitor-interval: 1m\nbackup:\n  type: litefs-cloud\n"
	c, err := Parse([]byte(yml), "litefs.yml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := []Ignored{{Key: "data.retention-monitor-interval", Line: 5}, {Key: "backup.type", Line: 7}}
	if len(c.Ignored) != len(want) {
		t.Fatalf("Ignored=%v, want %v", c.Ignored, want)
	}
	for i := range want {
		if c.Ignored[i] != want[i] {
			t.Fatalf("Ignored=%v, want %v", c.Ignored, want)
		}
	}
	if c.Data.Dir != "/var/lib/litefs" {
		t.Fatalf("data.dir=%q", c.Data.Dir)
	}
}

// A LiteFS Cloud backup (LiteFS Cloud closed in October 2024) still loads:
// its keys are listed as ignored, and backups stay off.
func TestParse_LiteFSCloudBackup(t *testing.T) {
	yml := "backup:\n  type: \"litefs-cloud\"\n  url: https://litefs.fly.io\n  cluster: my-cluster\n  auth-token: \"FlyV1 fm2_abc\"\n  path: /x\n"
	c, err := Parse([]byte(yml), "litefs.yml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := []Ignored{{"backup.type", 2}, {"backup.url", 3}, {"backup.cluster", 4}, {"backup.auth-token", 5}, {"backup.path", 6}}
	if !reflect.DeepEqual(c.Ignored, want) {
		t.Errorf("Ignored=%v, want %v", c.Ignored, want)
	}
	b := c.Backup
	if b.Enabled() || b.Kind() != "" || b.Type != BackupTypeLiteFSCloud || b.URL != "" || b.Path != "" {
		t.Errorf("Enabled()=%v Kind()=%q backup=%+v, want off, with only type litefs-cloud kept", b.Enabled(), b.Kind(), b)
	}

	t.Run("WithPagewireKeys", func(t *testing.T) {
		_, err := Parse([]byte(yml+"  bucket: b\n"), "litefs.yml", env(nil))
		if want := `litefs.yml:7: backup.bucket is set but backups are off: backup.type "litefs-cloud" is ignored`; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err=%v, want it to contain %q", err, want)
		}
	})
}

// secret-access-key is never printed: not by fmt, slog (text or JSON), nor
// in an error.
func TestBackupConfig_SecretRedacted(t *testing.T) {
	const secret = "wJalrXUtnFEMI-K7MDENG"
	yml := "backup:\n  type: s3\n  bucket: b\n  access-key-id: AKIDEXAMPLE\n  secret-access-key: " + secret + "\n"
	c, err := Parse([]byte(yml), "litefs.yml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&buf, verb+"\n", c)
		fmt.Fprintf(&buf, verb+"\n", c.Backup)
		fmt.Fprintf(&buf, verb+"\n", &c.Backup)
	}
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "backup", c.Backup)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "backup", c.Backup)
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Errorf("the secret is printed:\n%s", out)
	}
	for _, want := range []string{"SecretAccessKey:REDACTED", "AKIDEXAMPLE", `backup.secret-access-key=REDACTED`, `"secret-access-key":"REDACTED"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not contain %q:\n%s", want, out)
		}
	}

	// Errors about the keys do not print them.
	for _, y := range []string{
		"backup:\n  type: gcs\n  bucket: b\n  secret-access-key: " + secret + "\n",
		"backup:\n  type: s3\n  bucket: b\n  secret-access-key: " + secret + "\n",
		"backup:\n  secret-access-key: " + secret + "\n",
		"backup:\n  type: s3\n  endpoint: \"http://user:" + secret + "@[::1\"\n",
		"backup:\n  url: \"s3://user:" + secret + "@b/p\"\n",
	} {
		_, err := Parse([]byte(y), "litefs.yml", env(nil))
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", y)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("err=%q prints the secret", err)
		}
	}
}

func TestBackupConfig_Kind(t *testing.T) {
	for _, tt := range []struct {
		b    BackupConfig
		want string
	}{
		{BackupConfig{}, ""},
		{BackupConfig{Type: "s3"}, "s3"},
		{BackupConfig{Type: "litefs-cloud", URL: "https://litefs.fly.io"}, ""},
		{BackupConfig{URL: "s3://b/p"}, "s3"},
		{BackupConfig{URL: "gs://b/p"}, "gcs"},
		{BackupConfig{URL: "azblob://c/p"}, "azure"},
		{BackupConfig{URL: "file:///mnt/backups"}, "file"},
		{BackupConfig{URL: "https://example.com"}, ""},
		{BackupConfig{URL: "::"}, ""},
	} {
		if got := tt.b.Kind(); got != tt.want {
			t.Errorf("%+v.Kind()=%q, want %q", tt.b, got, tt.want)
		}
		if got, want := tt.b.Enabled(), tt.want != ""; got != want {
			t.Errorf("%+v.Enabled()=%v, want %v", tt.b, got, want)
		}
	}
}

func TestValidate_StorageSocketPathLength(t *testing.T) {
	c := Default()
	c.Data.StorageSocket = "/" + strings.Repeat("s", maxSocketPath-1)
	if err := c.Validate(); err != nil {
		t.Fatalf("a %d-byte socket path: %v", len(c.Data.StorageSocket), err)
	}
	c.Data.StorageSocket += "s"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "data.storage-socket") {
		t.Fatalf("a %d-byte socket path: %v, want an error naming data.storage-socket", len(c.Data.StorageSocket), err)
	}
	c.Data.StorageSocket = ""
	c.Data.Dir = "/" + strings.Repeat("d", maxSocketPath)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "data.storage-socket") {
		t.Fatalf("a data.dir too long for the default socket: %v, want an error naming data.storage-socket", err)
	}
}

func TestParse_AuthAndTLS(t *testing.T) {
	const file = `
auth:
  token:
    - ${NEW_TOKEN}
    - 0123456789abcdef-old
  protect-metrics: true
tls:
  cert: /etc/pagewire/tls.crt
  key: /etc/pagewire/tls.key
  ca: /etc/pagewire/ca.crt
  client-auth: require
lease:
  hostname: node1
`
	c, err := Parse([]byte(file), "litefs.yml", env(map[string]string{"NEW_TOKEN": "0123456789abcdef-new"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Auth.Token, (TokenList{"0123456789abcdef-new", "0123456789abcdef-old"}); !slices.Equal(got, want) {
		t.Errorf("auth.token = %q, want %q", got, want)
	}
	if !c.Auth.ProtectMetrics || c.TLS.ClientAuth != ClientAuthRequire || c.TLS.CA != "/etc/pagewire/ca.crt" {
		t.Errorf("auth/tls = %+v %+v", c.Auth, c.TLS)
	}
	// With TLS on the port, the default advertise URL is https.
	if got, want := c.Lease.AdvertiseURL, "https://node1:20202"; got != want {
		t.Errorf("lease.advertise-url = %q, want %q", got, want)
	}

	c, err = Parse([]byte("auth:\n  token: 0123456789abcdef0123\n"), "litefs.yml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Auth.Token, (TokenList{"0123456789abcdef0123"}); !slices.Equal(got, want) {
		t.Errorf("a single auth.token = %q, want %q", got, want)
	}
}
