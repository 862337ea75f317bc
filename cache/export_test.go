package cache

// Path returns the path the cache was opened with.
func (c *Cache) Path() string { return c.path }

// WALAutoCheckpoint is the writer connection's wal_autocheckpoint, in pages.
func (c *Cache) WALAutoCheckpoint() (int, error) {
	var n int
	err := c.w.QueryRow(`PRAGMA wal_autocheckpoint`).Scan(&n)
	return n, err
}
