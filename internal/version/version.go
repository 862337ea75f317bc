// Package version says which build of batchgpt is running: the module version, the commit and
// the Go version that `go build` stamped into the binary (runtime/debug.ReadBuildInfo). The
// first log line of a run, the summary JSON, the metrics file and `batchgpt --version` all take
// it from here, so a results file can always be traced to the build that wrote it.
//
// `go build` in a git checkout stamps the commit (vcs.revision, vcs.modified) unless
// -buildvcs=false; a build from a source tarball, or from a git worktree (whose .git is a file,
// which the go command does not recognise), has none. A packager can set both with
//
//	go build -ldflags "-X github.com/batchgpt/batchgpt/internal/version.version=v1.2.3 -X github.com/batchgpt/batchgpt/internal/version.commit=abc123"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set with -ldflags -X; they win over the build information.
var version, commit string

// Unknown stands for a version or commit the binary does not carry.
const Unknown = "unknown"

// Info is the build of a binary.
type Info struct {
	Version   string `json:"version"`    // the main module's version, e.g. v0.0.0-20261129212944-40ec4af2680f+dirty
	Commit    string `json:"commit"`     // the full vcs.revision
	Modified  bool   `json:"modified"`   // built from a work tree with uncommitted changes
	GoVersion string `json:"go_version"` // e.g. go1.26.0
}

// Get returns the build of the running binary.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return From(bi, version, commit)
}

// From reads the build information bi (nil when the binary has none); non-empty ver and rev
// replace its version and commit.
func From(bi *debug.BuildInfo, ver, rev string) Info {
	in := Info{Version: Unknown, Commit: Unknown, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if v := bi.Main.Version; v != "" {
			in.Version = v // "(devel)" when nothing stamped one
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Commit = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if ver != "" {
		in.Version = ver
	}
	if rev != "" {
		in.Commit = rev
	}
	return in
}

// ShortCommit is the commit's first 12 characters, as in a pseudo-version, with "+dirty" when
// the tree was modified.
func (in Info) ShortCommit() string {
	c := in.Commit
	if len(c) > 12 && c != Unknown {
		c = c[:12]
	}
	if in.Modified {
		c += "+dirty"
	}
	return c
}

// String is what `batchgpt --version` prints.
func (in Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "batchgpt %s\n", in.Version)
	fmt.Fprintf(&b, "commit: %s", in.Commit)
	if in.Modified {
		b.WriteString(" (modified)")
	}
	fmt.Fprintf(&b, "\ngo: %s\n", in.GoVersion)
	return b.String()
}

// LogAttrs are the build as slog attributes, for the first log line of a run.
func (in Info) LogAttrs() []any {
	return []any{"version", in.Version, "commit", in.ShortCommit(), "go", in.GoVersion}
}
