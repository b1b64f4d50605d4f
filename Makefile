# Cloudless: build, test, bench. Run as root: tests start real servers.
GO ?= go
BIN := bin/cloudless

.PHONY: build test bench clean

# cloudless and the helpers its node agent runs (runc, pause, CNI plugins).
build:
	GO=$(GO) build/build.sh bin

# The README's test command.
test:
	$(GO) test -count=1 -timeout 60m ./...

bench: build
	bench/datastore/run.sh
	bench/server/run.sh
	bench/agent/run.sh
	bench/network/run.sh
	bench/lint/run.sh

clean:
	rm -rf bin
