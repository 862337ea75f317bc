// Package report tells the world outside a run how it went, for runs nobody watches:
//
//	metrics.go  a Prometheus text file for node_exporter's textfile collector, written with
//	            client_golang's registry and WriteToTextfile (a temp file renamed over the old)
//	notify.go   a webhook that receives the summary JSON at the end of a run
//
// Neither may change a run's results or its exit code: a file that cannot be written or a
// webhook that fails is the caller's to log. The package knows nothing of jobs: the caller
// fills a Snapshot from its counters and hands over the summary as bytes.
package report
