package s3test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The Makefile builds deploy/seaweedfs into a folder named for Version, and
// DefaultPath looks there: Version must name the commit deploy/seaweedfs
// requires, and the Makefile's WEED_VERSION must be Version.
func TestVersion_MatchesDeployModuleAndMakefile(t *testing.T) {
	root := filepath.Join("..", "..")
	_, commit, _ := strings.Cut(Version, "-")

	mod, err := os.ReadFile(filepath.Join(root, "deploy", "seaweedfs", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var required string
	for line := range strings.Lines(string(mod)) {
		if f := strings.Fields(line); len(f) >= 2 && f[len(f)-2] == "github.com/seaweedfs/seaweedfs" {
			required = f[len(f)-1]
		}
	}
	if !strings.HasSuffix(required, "-"+commit) {
		t.Errorf("deploy/seaweedfs/go.mod requires seaweedfs %q, Version says commit %s: update Version and the Makefile's WEED_VERSION", required, commit)
	}

	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "WEED_VERSION = " + Version + "\n"; !strings.Contains(string(mk), want) {
		t.Errorf("the Makefile has no %q: make it the same as s3test.Version", strings.TrimSpace(want))
	}
}
