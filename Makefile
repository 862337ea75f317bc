# batchgpt: build, test, lint, demo and benchmarks. `make test` is what CI runs.
GO        ?= go
BIN       ?= bin/batchgpt
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: build test lint vet staticcheck unit demo bench bench-smoke fuzz tidy-check clean

# -buildvcs=auto: in a git checkout the binary carries its commit (batchgpt --version), even
# where GOFLAGS says -buildvcs=false.
build:
	$(GO) build -buildvcs=auto -o $(BIN) .

# The README's test command: vet, staticcheck, then every test with the race detector.
test: lint unit

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

lint: vet staticcheck tidy-check
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

tidy-check:
	@cp go.mod /tmp/batchgpt.go.mod.bak; cp go.sum /tmp/batchgpt.go.sum.bak; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod /tmp/batchgpt.go.mod.bak || ! cmp -s go.sum /tmp/batchgpt.go.sum.bak; then \
		cp /tmp/batchgpt.go.mod.bak go.mod; cp /tmp/batchgpt.go.sum.bak go.sum; \
		echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; fi

# Runs the samples through the built-in emulator: no credentials needed. The first run is new
# (or has nothing to do if it ran before); the second starts over (--force archives the first)
# and is answered from the result cache: nothing is submitted.
demo: build
	./$(BIN) run --emulator samples/prompts.jsonl
	./$(BIN) status samples/prompts.checkpoint.json
	./$(BIN) run --emulator --force samples/prompts.jsonl

# Benchmarks against the emulator on loopback; figures go to BENCHMARKS.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1x -timeout 60m ./bench/...

# Every benchmark of the module once, at a small size, so that benchmark code cannot rot: CI runs
# it (about a minute). Its figures mean nothing; BENCHMARKS.md has the real ones.
bench-smoke: build
	BATCHGPT_BENCH_ROWS=2000 BATCHGPT_BENCH_QUOTA_ROWS=200 BATCHGPT_BENCH_WINDOW_ROWS=1000 BATCHGPT_BENCH_CONCURRENCY=16 \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m ./...
	d=$$(mktemp -d) && $(GO) run ./bench/compactmem -rows 20000 -dir $$d/compactmem && rm -rf $$d

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime 30s ./store
	$(GO) test -run '^$$' -fuzz FuzzSummary -fuzztime 30s ./store
	$(GO) test -run '^$$' -fuzz FuzzEachNamed -fuzztime 30s ./store
	$(GO) test -run '^$$' -fuzz FuzzJSONL -fuzztime 30s ./batch
	$(GO) test -run '^$$' -fuzz FuzzCSV -fuzztime 30s ./batch
	$(GO) test -run '^$$' -fuzz FuzzResultLine -fuzztime 30s ./internal/job

clean:
	rm -rf bin samples/*.checkpoint.json* samples/*.results.*
