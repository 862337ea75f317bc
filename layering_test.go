package main

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The import rules of docs/architecture.md: the public packages at the top level import nothing
// of the module's internal/, and batch and store nothing of the module at all.
func TestLayering(t *testing.T) {
	const module = "github.com/batchgpt/batchgpt/"
	for dir, forbidden := range map[string][]string{
		"batch":  {module},
		"store":  {module},
		"poller": {module + "internal/"},
		"cache":  {module + "internal/"},
	} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		fset := token.NewFileSet()
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue // tests may use anything
			}
			f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				for _, prefix := range forbidden {
					if strings.HasPrefix(path, prefix) {
						t.Errorf("%s imports %s: %s must not import %s…", name, path, dir, prefix)
					}
				}
			}
		}
	}
}
