# Cloudless: build, test, bench. Run as root: tests start real servers.
GO ?= go
BIN := bin/cloudless

.PHONY: build test bench clean

build:
	$(GO) build -o $(BIN) ./cmd/cloudless

# The README's test command.
test:
	$(GO) test -count=1 -timeout 60m ./...

bench: build
	bench/datastore/run.sh
	bench/server/run.sh

clean:
	rm -rf bin
