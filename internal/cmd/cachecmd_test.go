package cmd

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/cache"
)

func TestParseAge(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"30d", 30 * 24 * time.Hour, false},
		{"1d", 24 * time.Hour, false},
		{"12h", 12 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"1.5d", 36 * time.Hour, false},
		{"2d30m15s", 48*time.Hour + 30*time.Minute + 15*time.Second, false},
		{"90m", 90 * time.Minute, false},
		{"1ms", time.Millisecond, false},
		{" 7d ", 7 * 24 * time.Hour, false},
		{"0d1h", time.Hour, false},
		{"", 0, true},
		{"d", 0, true},
		{"30", 0, true},
		{"30x", 0, true},
		{"garbage", 0, true},
		{"0", 0, true},
		{"0d", 0, true},
		{"0s", 0, true},
		{"-1d", 0, true},
		{"-5h", 0, true},
		{"+1d", 0, true},
		{"1d-5h", 0, true},
		{"1e3d", 0, true},
		{"1h30d", 0, true},
		{"1d 12h", 0, true},
		{"30D", 0, true},
		{"1d1d", 0, true},
		{"999999999d", 0, true},
		{"106751d", 106751 * 24 * time.Hour, false},
		{"106751d23h48m", 0, true}, // beyond time.Duration
	}
	for _, tt := range tests {
		got, err := ParseAge(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

// isolateCache keeps the tests away from the user's cache and environment.
func isolateCache(t *testing.T) {
	t.Setenv("BATCHGPT_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
}

// runCache runs `batchgpt cache ARGS...`, also as main does it: through Intersperse, which
// moves the flags before the subcommand's name.
func runCache(t *testing.T, intersperse bool, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb strings.Builder
	app := &cli.App{
		Name: "batchgpt", Writer: &out, ErrWriter: &errb, ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{(&env{stdout: &out, stderr: &errb}).cacheCommand()},
	}
	argv := append([]string{"batchgpt", "cache"}, args...)
	if intersperse {
		argv = Intersperse(app, argv)
	}
	err = app.Run(argv)
	return out.String(), errb.String(), err
}

// cacheBothWays runs f for plain and for interspersed arguments.
func cacheBothWays(t *testing.T, f func(t *testing.T, intersperse bool)) {
	for _, in := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "interspersed"}[in], func(t *testing.T) { f(t, in) })
	}
}

var (
	cacheOldAt = time.Now().Add(-40 * 24 * time.Hour).Truncate(time.Second).UTC()
	cacheNewAt = time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
)

// filledCache makes a cache with 3 entries of model a stored 40 days ago and 2 of model b an
// hour ago.
func filledCache(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache.db")
	c, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var entries []cache.Entry
	for i := range 5 {
		e := cache.Entry{Key: cache.Key{byte(i)}, ModelURI: "gpt://f/a", Text: "answer", CachedAt: cacheOldAt, TotalTokens: int64(i)}
		if i >= 3 {
			e.ModelURI, e.CachedAt = "gpt://f/b", cacheNewAt
		}
		entries = append(entries, e)
	}
	if err := c.Put(t.Context(), entries); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func isCacheUsage(err error, has string) bool {
	var ue *UsageError
	return errors.As(err, &ue) && strings.Contains(ue.Msg, has)
}

func TestCacheStats(t *testing.T) {
	isolateCache(t)
	path := filledCache(t)
	cacheBothWays(t, func(t *testing.T, in bool) {
		out, _, err := runCache(t, in, "stats", "--cache", path)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"cache:    " + path, "entries:  5\n", "oldest:   " + cacheOldAt.Format(time.RFC3339) + " (40d ago)",
			"newest:   " + cacheNewAt.Format(time.RFC3339) + " (1h ago)", "models:\n         3  gpt://f/a\n         2  gpt://f/b\n", " KiB on disk"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}

		out, _, err = runCache(t, in, "stats", "--json", "--cache", path)
		if err != nil {
			t.Fatal(err)
		}
		var st cacheStatsJSON
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if !st.Exists || st.Path != path || st.Entries != 5 || st.Bytes <= 0 || st.Models["gpt://f/a"] != 3 || st.Models["gpt://f/b"] != 2 ||
			st.Oldest == nil || !st.Oldest.Equal(cacheOldAt) || st.Newest == nil || !st.Newest.Equal(cacheNewAt) {
			t.Errorf("stats --json: %+v\n%s", st, out)
		}
	})
}

func TestCacheStatsNoCache(t *testing.T) {
	isolateCache(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "sub", "cache.db")
	xdg := t.TempDir()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		path string
	}{
		{"--cache", nil, []string{"--cache", missing}, missing},
		{"BATCHGPT_CACHE", map[string]string{"BATCHGPT_CACHE": missing}, nil, missing},
		{"XDG_CACHE_HOME", map[string]string{"XDG_CACHE_HOME": xdg}, nil, filepath.Join(xdg, "batchgpt", "cache.db")},
		{"--cache wins over BATCHGPT_CACHE", map[string]string{"BATCHGPT_CACHE": filepath.Join(dir, "other.db")}, []string{"--cache", missing}, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cacheBothWays(t, func(t *testing.T, in bool) {
				out, _, err := runCache(t, in, append([]string{"stats"}, tt.args...)...)
				if err != nil || out != "no cache yet at "+tt.path+" (a run creates it)\n" {
					t.Errorf("stats: %v\n%s", err, out)
				}
				out, _, err = runCache(t, in, append([]string{"stats", "--json"}, tt.args...)...)
				var st cacheStatsJSON
				if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Exists || st.Entries != 0 || st.Path != tt.path {
					t.Errorf("stats --json: %v\n%s", err, out)
				}
			})
			for _, d := range []string{dir, xdg} {
				if names, _ := os.ReadDir(d); len(names) != 0 {
					t.Errorf("stats created %v in %s", names, d)
				}
			}
		})
	}
}

func TestCachePrune(t *testing.T) {
	isolateCache(t)
	cacheBothWays(t, func(t *testing.T, in bool) {
		path := filledCache(t)
		out, _, err := runCache(t, in, "prune", "--older-than", "30d", "--cache", path)
		if err != nil || !strings.Contains(out, "deleted 3 entries stored before ") || !strings.Contains(out, "(older than 30d); 2 left, ") {
			t.Fatalf("prune: %v\n%s", err, out)
		}
		out, _, err = runCache(t, in, "prune", "--cache", path, "--older-than=1d12h")
		if err != nil || !strings.HasPrefix(out, "deleted 0 entries") {
			t.Fatalf("second prune: %v\n%s", err, out)
		}
		c, err := cache.Open(path, cache.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		st, err := c.Stats(t.Context())
		if err != nil || st.Entries != 2 || st.Models["gpt://f/b"] != 2 {
			t.Errorf("after prune: %+v, %v", st, err)
		}

		missing := filepath.Join(t.TempDir(), "sub", "cache.db")
		out, _, err = runCache(t, in, "prune", "--older-than", "1h", "--cache", missing)
		if err != nil || out != "no cache yet at "+missing+": nothing to prune\n" {
			t.Errorf("prune of no cache: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
			t.Errorf("prune of no cache created its directory")
		}
	})
}

func TestCacheUsageErrors(t *testing.T) {
	isolateCache(t)
	path := filledCache(t)
	tests := []struct {
		args []string
		has  string
	}{
		{[]string{"prune", "--cache", path}, "--older-than is required"},
		{[]string{"prune", "--older-than", "0", "--cache", path}, `--older-than "0"`},
		{[]string{"prune", "--older-than", "0d", "--cache", path}, `--older-than "0d"`},
		{[]string{"prune", "--older-than=-1d", "--cache", path}, `--older-than "-1d"`},
		{[]string{"prune", "--older-than=-5h", "--cache", path}, `--older-than "-5h"`},
		{[]string{"prune", "--older-than", "abc", "--cache", path}, `--older-than "abc"`},
		{[]string{"prune", "--older-than", "30", "--cache", path}, `--older-than "30"`},
		{[]string{"stats", "--cache", path, "extra"}, `unexpected argument "extra"`},
		{[]string{"export", "--cache", path, "out.jsonl"}, `unexpected argument "out.jsonl"`},
	}
	for _, tt := range tests {
		cacheBothWays(t, func(t *testing.T, in bool) {
			_, _, err := runCache(t, in, tt.args...)
			if !isCacheUsage(err, tt.has) {
				t.Errorf("%q: %v, want a usage error with %q", tt.args, err, tt.has)
			}
		})
	}
	// Nothing was deleted by the rejected prunes.
	c, err := cache.Open(path, cache.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.Stats(t.Context()); err != nil || st.Entries != 5 {
		t.Errorf("after rejected prunes: %+v, %v", st, err)
	}
}

// exportedCacheKeys parses JSONL and returns the keys.
func exportedCacheKeys(t *testing.T, s string) []string {
	t.Helper()
	var keys []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var line struct {
			Key   string `json:"key"`
			Usage struct {
				TotalTokens int64 `json:"total_tokens"`
			} `json:"usage"`
			CachedAt time.Time `json:"cached_at"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || len(line.Key) != 64 || line.CachedAt.IsZero() {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		keys = append(keys, line.Key)
	}
	return keys
}

func TestCacheExport(t *testing.T) {
	isolateCache(t)
	path := filledCache(t)
	cacheBothWays(t, func(t *testing.T, in bool) {
		out, _, err := runCache(t, in, "export", "--cache", path)
		if err != nil || len(exportedCacheKeys(t, out)) != 5 {
			t.Fatalf("export to stdout: %v\n%s", err, out)
		}

		dir := t.TempDir()
		file := filepath.Join(dir, "out.jsonl")
		mustCache(t, os.WriteFile(file, []byte("old content\n"), 0o644))
		out, _, err = runCache(t, in, "export", "-o", file, "--cache", path)
		if err != nil || out != "exported 5 entries to "+file+"\n" {
			t.Fatalf("export -o: %v\n%s", err, out)
		}
		data, err := os.ReadFile(file)
		mustCache(t, err)
		if keys := exportedCacheKeys(t, string(data)); len(keys) != 5 {
			t.Errorf("export -o wrote %d entries", len(keys))
		}
		if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
			t.Errorf("export -o: mode %v, want 0600", fi.Mode())
		}
		if names, _ := os.ReadDir(dir); len(names) != 1 {
			t.Errorf("export -o left files behind: %v", names)
		}

		if _, _, err := runCache(t, in, "export", "--output", filepath.Join(dir, "no", "such", "dir.jsonl"), "--cache", path); err == nil {
			t.Error("export into a missing directory succeeded")
		}

		missing := filepath.Join(t.TempDir(), "sub", "cache.db")
		out, errOut, err := runCache(t, in, "export", "--cache", missing)
		if err != nil || out != "" || !strings.Contains(errOut, "no cache yet at "+missing) {
			t.Errorf("export of no cache: %v, %q, %q", err, out, errOut)
		}
		if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
			t.Errorf("export of no cache created its directory")
		}
	})
}

func TestCacheDamaged(t *testing.T) {
	isolateCache(t)
	path := filepath.Join(t.TempDir(), "cache.db")
	mustCache(t, os.WriteFile(path, []byte(strings.Repeat("not a database ", 500)), 0o600))
	for _, args := range [][]string{{"stats"}, {"prune", "--older-than", "1d"}, {"export"}} {
		_, _, err := runCache(t, false, append(args, "--cache", path)...)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s of a damaged cache: %v, want an error naming it", args[0], err)
		}
	}
}

func mustCache(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
