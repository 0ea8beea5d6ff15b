# Edgeshield — build, run, test.
GO      ?= go
SHELL   := /bin/bash
BIN     := bin/edgeshield
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/edgeshield/edgeshield/edge.Version=$(VERSION)
# Race-enabled tests of every package; fuzz seed corpora (testdata/fuzz) run as ordinary tests.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build run test test-allocs vet lint fmt-check bench fuzz image clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/edgeshield

# An edge on 127.0.0.1:8080 in front of the built-in demo origin.
run: build
	./$(BIN) run

test: fmt-check vet lint test-allocs
	$(GO) test $(TESTFLAGS) ./...
	# Package edge again with every stored body in a memory file (off-heap).
	$(GO) test $(TESTFLAGS) ./edge -args -edge.offheap-min=1

# Allocation tests (the fresh-hit path allocates nothing, …) without -race:
# under the race detector sync.Pool drops items on purpose, so they skip there.
ALLOCTESTS := Alloc|DoesNotAllocate|AllocatesNothing
test-allocs:
	$(GO) test -count=1 -run '$(ALLOCTESTS)' -v ./... 2>&1 | grep -v -e '^=== RUN' -e '^PASS$$' ; exit $$(( $${PIPESTATUS[0]} ))

# staticcheck (pinned; .ci/run installs it). Skipped with a message when missing, outside CI.
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || ls $$($(GO) env GOPATH)/bin/staticcheck 2>/dev/null)
lint:
	@if [ -n "$(STATICCHECK)" ]; then echo "$(STATICCHECK) ./..."; $(STATICCHECK) ./...; \
	elif [ "$$CI" = "true" ]; then echo "staticcheck missing (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2)"; exit 1; \
	else echo "lint: staticcheck not installed, skipped (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2)"; fi

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Side-by-side comparison with nginx and Varnish (see bench/RESULTS.md).
bench: build
	bash bench/compare.sh

# Docker image FROM scratch with a host-built static binary (no registry needed).
image:
	mkdir -p bin/image
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/image/edgeshield ./cmd/edgeshield
	@test -s /etc/ssl/certs/ca-certificates.crt || { echo "no CA bundle at /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates)"; exit 1; }
	cp /etc/ssl/certs/ca-certificates.crt bin/image/
	docker build -t edgeshield:$(VERSION) -t edgeshield:latest .

# Short coverage-guided fuzzing of the parsers (the seed corpora also run in `make test`).
fuzz:
	$(GO) test ./cache -run '^$$' -fuzz FuzzParseCacheControl -fuzztime 30s
	$(GO) test ./cache -run '^$$' -fuzz FuzzParseRange -fuzztime 30s

clean:
	rm -rf bin bench/out
