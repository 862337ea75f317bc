package main

import (
	"debug/buildinfo"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/version"
)

// binaryBuild is the build information the binary carries, as batchgpt must report it.
func binaryBuild(t *testing.T, bin string) version.Info {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return version.From(bi, "", "")
}

// --version and the version command print the build information of the binary itself.
func TestVersion(t *testing.T) {
	want := binaryBuild(t, binary).String()
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := runCmd(t, command("http://127.0.0.1:9", args...))
		if r.code != 0 || r.stdout != want {
			t.Errorf("batchgpt %s: exit %d, stdout %q, want %q (stderr %q)", args[0], r.code, r.stdout, want, r.stderr)
		}
	}
	if r := runCmd(t, command("http://127.0.0.1:9", "version", "extra")); r.code != 2 {
		t.Errorf("batchgpt version extra: exit %d, want 2", r.code)
	}
}

// Built by `go build` in a git checkout, the binary names its commit. The test binary is not
// (GOFLAGS may say -buildvcs=false, and a git worktree is no checkout to the go command): this
// test builds a clone of HEAD with the work tree's files laid over it, so the code under test
// is the work tree's and the commit and "modified" are those of the checkout.
func TestVersionFromGit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a clone")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	rev := strings.TrimSpace(string(head))
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if out, err := exec.Command("git", "clone", "--quiet", "--no-checkout", ".", src).CombinedOutput(); err != nil {
		t.Skipf("git clone: %v\n%s", err, out)
	}
	if out, err := exec.Command("git", "-C", src, "checkout", "--quiet", rev).CombinedOutput(); err != nil {
		t.Fatalf("git checkout: %v\n%s", err, out)
	}
	files, err := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Split(strings.TrimSuffix(string(files), "\x00"), "\x00") {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			os.Remove(filepath.Join(src, f)) // deleted in the work tree
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	status, err := exec.Command("git", "-C", src, "status", "--porcelain").Output()
	if err != nil {
		t.Fatal(err)
	}
	modified := len(status) > 0
	bin := filepath.Join(dir, "batchgpt")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	// The pseudo-version go build derives from the commit, e.g. v0.0.0-20261129212944-40ec4af2680f.
	if !strings.HasPrefix(got, "batchgpt v") || !strings.Contains(strings.SplitN(got, "\n", 2)[0], rev[:12]) {
		t.Errorf("version line of a build of %s: %q", rev, got)
	}
	commitLine := "\ncommit: " + rev + "\n"
	if modified {
		commitLine = "\ncommit: " + rev + " (modified)\n"
	}
	if !strings.Contains(got, commitLine) {
		t.Errorf("--version of a build of %s says %q", rev, got)
	}
	if want := binaryBuild(t, bin).String(); got != want {
		t.Errorf("--version = %q, want %q", got, want)
	}
}
