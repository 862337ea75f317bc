package cache

// Path returns the path the cache was opened with.
func (c *Cache) Path() string { return c.path }
