package cmd

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/cache"
)

// ParseAge reads an age such as 30d, 12h, 90m or 1d12h: a Go duration, optionally led by a
// number of days (d, 24 hours; 1.5d works too). It must be positive.
func ParseAge(s string) (time.Duration, error) {
	const want = "want a positive age such as 30d, 12h or 1d12h"
	rest := strings.TrimSpace(s)
	var d time.Duration
	if days, after, ok := strings.Cut(rest, "d"); ok {
		if days == "" || strings.Trim(days, "0123456789.") != "" {
			return 0, errors.New(want)
		}
		n, err := strconv.ParseFloat(days, 64)
		if err != nil {
			return 0, errors.New(want)
		}
		if n*float64(24*time.Hour) >= math.MaxInt64 {
			return 0, errors.New("too long an age")
		}
		d, rest = time.Duration(n*float64(24*time.Hour)), after
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 {
			return 0, errors.New(want)
		}
		if d > math.MaxInt64-r {
			return 0, errors.New("too long an age")
		}
		d += r
	}
	if d <= 0 {
		return 0, errors.New(want)
	}
	return d, nil
}

// cacheFileFlag is --cache, which every cache subcommand takes.
func cacheFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "cache", EnvVars: []string{"BATCHGPT_CACHE"}, Usage: "result cache `FILE` (default: $XDG_CACHE_HOME/batchgpt/cache.db, else ~/.cache/batchgpt/cache.db)"}
}

func (e *env) cacheCommand() *cli.Command {
	return &cli.Command{
		Name:  "cache",
		Usage: "show, prune or export the result cache",
		Description: "The result cache keeps every answer by its request, so that a request answered before is not\n" +
			"submitted (and paid for) again. It is one SQLite file shared by every batchgpt process of the user.\n" +
			"Examples:\n" +
			"   batchgpt cache stats\n" +
			"   batchgpt cache prune --older-than 30d\n" +
			"   batchgpt cache export -o answers.jsonl",
		Subcommands: []*cli.Command{
			{
				Name:   "stats",
				Usage:  "print the entries, size on disk, oldest and newest entry and entries per model",
				Flags:  []cli.Flag{cacheFileFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}},
				Action: e.cacheStats,
			},
			{
				Name:  "prune",
				Usage: "delete the entries older than --older-than",
				Flags: []cli.Flag{cacheFileFlag(),
					&cli.StringFlag{Name: "older-than", Usage: "delete the entries stored more than `AGE` ago: 30d, 12h, 1d12h (required)"}},
				Action: e.cachePrune,
			},
			{
				Name:  "export",
				Usage: "write every entry as a JSON line (key, model_uri, text, alternative_status, usage, model_version, operation_id, cached_at)",
				Flags: []cli.Flag{cacheFileFlag(),
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (mode 0600, replaced only once complete) instead of stdout"}},
				Action: e.cacheExport,
			},
		},
	}
}

// cachePath is the --cache flag, else the default path. It checks that no arguments are left.
func cachePath(c *cli.Context) (string, error) {
	if c.NArg() > 0 {
		return "", usagef("cache %s: unexpected argument %q (the cache file is given with --cache)", c.Command.Name, c.Args().First())
	}
	if p := c.String("cache"); p != "" {
		return p, nil
	}
	return cache.DefaultPath()
}

// openExistingCache opens the cache at path, or returns nil if there is none, creating nothing.
func openExistingCache(path string, readOnly bool) (*cache.Cache, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return cache.Open(path, cache.Options{ReadOnly: readOnly})
}

// cacheStatsJSON is the output of `cache stats --json`.
type cacheStatsJSON struct {
	Path    string           `json:"path"`
	Exists  bool             `json:"exists"`
	Entries int64            `json:"entries"`
	Bytes   int64            `json:"bytes"`
	Oldest  *time.Time       `json:"oldest,omitempty"`
	Newest  *time.Time       `json:"newest,omitempty"`
	Models  map[string]int64 `json:"models"`
}

func (e *env) cacheStats(c *cli.Context) error {
	path, err := cachePath(c)
	if err != nil {
		return err
	}
	ch, err := openExistingCache(path, true)
	if err != nil {
		return err
	}
	out := cacheStatsJSON{Path: path, Models: map[string]int64{}}
	if ch != nil {
		defer ch.Close()
		st, err := ch.Stats(c.Context)
		if err != nil {
			return err
		}
		out.Exists, out.Entries, out.Bytes, out.Models = true, st.Entries, st.Bytes, st.Models
		if st.Entries > 0 {
			out.Oldest, out.Newest = &st.Oldest, &st.Newest
		}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	w := e.stdout
	if !out.Exists {
		fmt.Fprintf(w, "no cache yet at %s (a run creates it)\n", path)
		return nil
	}
	now := time.Now()
	fmt.Fprintf(w, "cache:    %s\nentries:  %d\nsize:     %s on disk\n", path, out.Entries, formatCacheBytes(out.Bytes))
	if out.Entries > 0 {
		fmt.Fprintf(w, "oldest:   %s (%s ago)\nnewest:   %s (%s ago)\n", out.Oldest.Format(time.RFC3339), formatCacheAge(now.Sub(*out.Oldest)),
			out.Newest.Format(time.RFC3339), formatCacheAge(now.Sub(*out.Newest)))
		models := make([]string, 0, len(out.Models))
		for m := range out.Models {
			models = append(models, m)
		}
		slices.SortFunc(models, func(a, b string) int { // most entries first
			return cmp.Or(cmp.Compare(out.Models[b], out.Models[a]), strings.Compare(a, b))
		})
		fmt.Fprintln(w, "models:")
		for _, m := range models {
			fmt.Fprintf(w, "  %8d  %s\n", out.Models[m], m)
		}
	}
	return nil
}

func (e *env) cachePrune(c *cli.Context) error {
	if !c.IsSet("older-than") {
		return usagef("cache prune: --older-than is required, e.g. --older-than 30d")
	}
	v := c.String("older-than")
	age, err := ParseAge(v)
	if err != nil {
		return usagef("--older-than %q: %v", v, err)
	}
	path, err := cachePath(c)
	if err != nil {
		return err
	}
	ch, err := openExistingCache(path, false)
	if err != nil {
		return err
	}
	if ch == nil {
		fmt.Fprintf(e.stdout, "no cache yet at %s: nothing to prune\n", path)
		return nil
	}
	defer ch.Close()
	before := time.Now().Add(-age)
	n, err := ch.Prune(c.Context, before)
	if err != nil {
		return err
	}
	st, err := ch.Stats(c.Context)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted %d entries stored before %s (older than %s); %d left, %s on disk\n",
		n, before.UTC().Format(time.RFC3339), v, st.Entries, formatCacheBytes(st.Bytes))
	return nil
}

func (e *env) cacheExport(c *cli.Context) error {
	path, err := cachePath(c)
	if err != nil {
		return err
	}
	output := c.String("output")
	ch, err := openExistingCache(path, true)
	if err != nil {
		return err
	}
	if ch == nil {
		fmt.Fprintf(e.stderr, "batchgpt: no cache yet at %s: nothing to export\n", path)
	} else {
		defer ch.Close()
	}
	export := func(w io.Writer) (int64, error) {
		if ch == nil {
			return 0, nil
		}
		return ch.Export(c.Context, w)
	}
	if output == "" || output == "-" {
		_, err := export(e.stdout)
		return err
	}
	n, err := writeExportFile(output, export)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d entries to %s\n", n, output)
	return nil
}

// writeExportFile writes path (mode 0600) through a temporary file renamed over it once
// complete: an export that fails leaves no half file behind.
func writeExportFile(path string, write func(io.Writer) (int64, error)) (n int64, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if n, err = write(f); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	return n, nil
}

// formatCacheBytes is n in bytes, KiB, MiB or GiB.
func formatCacheBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 2 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", f, [...]string{"KiB", "MiB", "GiB"}[i])
}

// formatCacheAge is d in whole minutes, hours or days.
func formatCacheAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "less than a minute"
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
