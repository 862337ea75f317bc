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
// of the module's internal/, batch and store nothing of the module at all, and the emulators
// nothing but themselves, so that they answer as the real API does, not as our client expects.
func TestLayering(t *testing.T) {
	const module = "github.com/batchgpt/batchgpt/"
	allowed := map[string]string{"internal/emulator/batchmode": module + "internal/emulator"}
	for dir, forbidden := range map[string][]string{
		"batch":                       {module},
		"store":                       {module},
		"poller":                      {module + "internal/"},
		"cache":                       {module + "internal/"},
		"internal/emulator":           {module},
		"internal/emulator/batchmode": {module},
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
				if path == allowed[dir] {
					continue
				}
				for _, prefix := range forbidden {
					if strings.HasPrefix(path, prefix) {
						t.Errorf("%s imports %s: %s must not import %s…", name, path, dir, prefix)
					}
				}
			}
		}
	}
}
