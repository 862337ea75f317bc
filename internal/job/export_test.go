package job

// KeyScope is the scope of a run's request keys, for tests that find its duplicate rows as the
// run does.
func KeyScope(s Settings) string { return s.keyScope() }
