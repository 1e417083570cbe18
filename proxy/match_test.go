package proxy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/pagewire/pagewire"
)

func TestPattern_Match(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/admin", "/admin", true},
		{"/admin", "/admin/", false},
		{"/admin", "/admins", false},
		{"/admin", "/x/admin", false},
		{"/static/*", "/static/", true},
		{"/static/*", "/static/css/site.css", true}, // '*' crosses '/'
		{"/static/*", "/static", false},
		{"/static/*", "/other/static/x", false},
		{"*.png", "/a/b/c.png", true},
		{"*.png", ".png", true},
		{"*.png", "/a.png.txt", false},
		{"*", "", true},
		{"*", "/anything/at/all", true},
		{"/api/*/events", "/api/v1/events", true},
		{"/api/*/events", "/api/v1/x/events", true},
		{"/api/*/events", "/api/events", false},
		{"/api/*/events", "/api//events", true},
		{"a*b*b", "abb", true},
		{"a*b*b", "ab", false},
		{"a*ab", "ab", false}, // the ends must not overlap
		{"*a*", "xay", true},
		{"**", "/x", true},
		{"/x?y", "/x?y", true}, // '?' and '[' are literal
		{"/x?y", "/xzy", false},
		{"/[a]", "/[a]", true},
		{"/[a]", "/a", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s~%s", tt.pattern, tt.path), func(t *testing.T) {
			if got := compilePattern(tt.pattern).match(tt.path); got != tt.want {
				t.Fatalf("%q matches %q = %v, want %v", tt.pattern, tt.path, got, tt.want)
			}
		})
	}
}

func TestPatterns_Match(t *testing.T) {
	ps := compilePatterns([]string{"/static/*", "*.ico"})
	for path, want := range map[string]bool{"/static/a": true, "/favicon.ico": true, "/": false, "/items": false} {
		if got := ps.match(path); got != want {
			t.Errorf("match(%q) = %v, want %v", path, got, want)
		}
	}
	if compilePatterns(nil).match("/") {
		t.Error("no patterns matched /")
	}
}

// FuzzPattern_Match checks the matcher against a regexp built from the
// same pattern.
func FuzzPattern_Match(f *testing.F) {
	f.Add("/static/*", "/static/a/b")
	f.Add("a*b*b", "abb")
	f.Add("*.png", "/x.png")
	f.Add("a*ab", "ab")
	f.Fuzz(func(t *testing.T, pat, path string) {
		parts := strings.Split(pat, "*")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		re, err := regexp.Compile(`(?s)\A` + strings.Join(parts, ".*") + `\z`)
		if err != nil {
			t.Skip() // invalid UTF-8 and the like
		}
		if got, want := compilePattern(pat).match(path), re.MatchString(path); got != want {
			t.Fatalf("%q matches %q = %v, regexp says %v", pat, path, got, want)
		}
	})
}

func TestParseTXID(t *testing.T) {
	tests := []struct {
		in   string
		want pagewire.TXID
		ok   bool
	}{
		{"0000000000000001", 1, true},
		{"00000000000000ff", 255, true},
		{"ffffffffffffffff", 1<<64 - 1, true},
		{"00000000000000FF", 255, true},
		{"", 0, false},
		{"1", 0, false},
		{"000000000000001", 0, false},   // 15 digits
		{"00000000000000001", 0, false}, // 17 digits
		{"000000000000000g", 0, false},
		{"0x00000000000001", 0, false},
		{"+000000000000001", 0, false},
		{"00000000_0000001", 0, false},
	}
	for _, tt := range tests {
		got, err := parseTXID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseTXID(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzParseTXID checks that whatever parseTXID accepts is what the
// primary's cookie would say for that TXID.
func FuzzParseTXID(f *testing.F) {
	f.Add("0000000000000001")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		txid, err := parseTXID(s)
		if err != nil {
			return
		}
		if got := txid.String(); got != strings.ToLower(s) {
			t.Fatalf("parseTXID(%q) = %s", s, got)
		}
	})
}
