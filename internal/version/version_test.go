package version

import (
	"runtime/debug"
	"testing"
)

func TestFrom(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.0",
		Main: debug.Module{Path: "github.com/batchgpt/batchgpt", Version: "v0.0.0-20261129212944-40ec4af2680f+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "40ec4af2680fdda36ee94e21cf2c0939f0de0b62"},
			{Key: "vcs.time", Value: "2026-11-29T21:29:44Z"}, {Key: "vcs.modified", Value: "true"}}}
	bare := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/batchgpt/batchgpt", Version: "(devel)"}}
	for _, tc := range []struct {
		name     string
		bi       *debug.BuildInfo
		ver, rev string
		want     Info
		short    string
	}{
		{"stamped by go build in a git checkout", stamped, "", "",
			Info{"v0.0.0-20261129212944-40ec4af2680f+dirty", "40ec4af2680fdda36ee94e21cf2c0939f0de0b62", true, "go1.26.0"}, "40ec4af2680f+dirty"},
		{"no vcs (-buildvcs=false, a tarball, a worktree)", bare, "", "", Info{"(devel)", Unknown, false, "go1.26.0"}, Unknown},
		{"set with -ldflags -X", bare, "v1.2.3", "abc123", Info{"v1.2.3", "abc123", false, "go1.26.0"}, "abc123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := From(tc.bi, tc.ver, tc.rev)
			if got != tc.want {
				t.Fatalf("From = %+v, want %+v", got, tc.want)
			}
			if s := got.ShortCommit(); s != tc.short {
				t.Errorf("ShortCommit = %q, want %q", s, tc.short)
			}
		})
	}
	if got := From(nil, "", ""); got.Version != Unknown || got.Commit != Unknown || got.GoVersion == "" {
		t.Errorf("From(nil) = %+v", got)
	}
}

func TestString(t *testing.T) {
	got := Info{"v1.2.3", "abc", true, "go1.26.0"}.String()
	want := "batchgpt v1.2.3\ncommit: abc (modified)\ngo: go1.26.0\n"
	if got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
