package cmd

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/batchgpt/batchgpt/cache"
)

// openedCache is the result cache of a run, or why there is none.
type openedCache struct {
	cache   *cache.Cache // nil: none
	path    string
	ttl     time.Duration
	problem string // why a cache that was asked for is not used
}

func (o *openedCache) close() {
	if o.cache != nil {
		o.cache.Close()
	}
}

// openCache opens the result cache that cc names (off: none). A cache that cannot be opened is
// never a reason to fail the run: it is reported, and the run goes on without it. readOnly
// (dry runs) neither creates nor writes anything.
func (e *env) openCache(cc cacheConfig, logger *slog.Logger, off, readOnly bool) *openedCache {
	o := &openedCache{ttl: cc.ttl}
	if off {
		logger.Info("result cache off (--no-cache): every row is submitted, no answer is stored")
		return o
	}
	path := cc.path
	if path == "" {
		p, err := cache.DefaultPath()
		if err != nil {
			o.problem = err.Error()
			logger.Warn("no place for the result cache; going on without it (set --cache or BATCHGPT_CACHE)", "err", err)
			return o
		}
		path = p
	}
	o.path = path
	if readOnly {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			o.problem = "no cache yet at " + path
			return o
		}
	}
	c, err := cache.Open(path, cache.Options{ReadOnly: readOnly})
	if err != nil {
		o.problem = err.Error()
		logger.Warn("the result cache cannot be used; going on without it (rows are submitted, answers are not stored)",
			"cache", path, "err", err)
		return o
	}
	o.cache = c
	logger.Info("result cache", "path", path)
	return o
}
