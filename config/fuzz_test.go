package config

import (
	"os"
	"strings"
	"testing"
)

// fuzzEnv is a fixed environment for the fuzz tests; its values hold no '$'.
var fuzzEnv = env(map[string]string{
	"A":            "a",
	"B":            "b",
	"FLY_REGION":   "ord",
	"FLY_APP_NAME": "myapp",
	"EMPTY":        "",
	"NL":           "x\ny",
})

func FuzzExpand(f *testing.F) {
	for _, s := range []string{
		"", "plain text", "$", "$$", "$A", "${A}", "${A:-b}", "${A == B}",
		"${FLY_REGION != 'ord'}", `${"x" == A}`, "${", "${A", "${A:-${B}}",
		"a: ${A}\nb: $B\n", "${ A == 'x}'}", "$$${A}$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Expand(s, fuzzEnv)
		if !strings.Contains(s, "$") {
			if err != nil || got != s {
				t.Fatalf("Expand(%q)=%q, %v; want the input unchanged", s, got, err)
			}
		}
		if err != nil && got != "" {
			t.Fatalf("Expand(%q)=%q with error %v; want \"\"", s, got, err)
		}
	})
}

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/litefs.yml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"", "fuse:\n  dir: /a\n", "exec: app\n", "exec:\n  - cmd: a\n    if-candidate: true\n",
		"lease:\n  type: consul\n  consul:\n    url: http://x\n", "a: &a [*a]\n",
		"exec:\n  - <<: {cmd: x}\n", "fuse: {dirr: 1}\n", "- a\n", "---\n---\n",
		"data:\n  retention: ${A:-10m}\n", "proxy:\n  passthrough: [\"[\"]\n",
		"backup:\n  type: s3\n  bucket: b\n  path: p/\n  endpoint: http://x:8333\n  force-path-style: true\n",
		"backup:\n  url: gs://b/p\n  levels: [1m, 5m]\n  restore-on-start: true\n",
		"backup:\n  type: litefs-cloud\n  url: https://x\n  cluster: c\n  auth-token: t\n",
		"backup:\n  type: file\n  path: ${A:-/b}\n  delay: 2s\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yml", fuzzEnv)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse returned a Config that fails Validate: %v", err)
		}
	})
}
