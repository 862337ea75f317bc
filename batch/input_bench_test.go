package batch_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

const benchRows = 100_000

// benchInput writes benchRows rows of about 100 bytes each.
func benchInput(b *testing.B, format string) (path string, size int64) {
	b.Helper()
	path = filepath.Join(b.TempDir(), "in."+format)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if format == "csv" {
		fmt.Fprintln(w, "id,prompt")
	}
	for i := range benchRows {
		if format == "csv" {
			fmt.Fprintf(w, "row-%07d,\"Translate to English, please: the quick brown fox jumps over the dog #%d\"\n", i, i)
		} else {
			fmt.Fprintf(w, "{\"id\": \"row-%07d\", \"prompt\": \"Translate to English: the quick brown fox jumps #%d\"}\n", i, i)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return path, st.Size()
}

func BenchmarkValidate(b *testing.B) {
	for _, format := range []string{"jsonl", "csv"} {
		b.Run(format, func(b *testing.B) {
			path, size := benchInput(b, format)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				sum, err := batch.Validate(path, defaults, 10)
				if err != nil || sum.Rows != benchRows {
					b.Fatalf("Validate = %+v, %v", sum, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRows), "ns/row")
		})
	}
}

func BenchmarkReader(b *testing.B) {
	for _, format := range []string{"jsonl", "csv"} {
		b.Run(format, func(b *testing.B) {
			path, size := benchInput(b, format)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				r, err := batch.Open(path, defaults)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for {
					_, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				r.Close()
				if n != benchRows {
					b.Fatalf("read %d rows", n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRows), "ns/row")
		})
	}
}
