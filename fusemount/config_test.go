package fusemount

import (
	"strings"
	"testing"
	"time"

	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

func TestConfig_Validate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Dir, c.Storage = "/litefs", storagev1.NewStorageServiceClient(nil)
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no dir", func(c *Config) { c.Dir = "" }, "fuse.dir is not set: set it"},
		{"no storage", func(c *Config) { c.Storage = nil }, "Config.Storage is nil"},
		{"negative cache timeout", func(c *Config) { c.CacheTimeout = -time.Second }, "Config.CacheTimeout is -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error saying %q", err, tt.want)
			}
			if _, err := New(c); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
}
