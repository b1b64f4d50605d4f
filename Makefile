# Cloudless: build, test, bench. Run as root: tests start real servers.
GO ?= go
BIN := bin/cloudless

# The build configuration cloudless ships with (static, build tags): the
# tests compile with it too.
include build/go.env
export CGO_ENABLED GOFLAGS

.PHONY: build dist test bench conformance clean

# cloudless and the helpers its node agent runs (runc, pause, CNI plugins).
build:
	GO=$(GO) build/build.sh bin

# The release archive: dist/cloudless-<version>-linux-<arch>.tar.zst,
# built with -trimpath and -s -w (sizes: bench/binary/run.sh).
dist:
	GO=$(GO) build/dist.sh

# Conformance specs that guard what Cloudless does itself (hostPort,
# cluster DNS, Services, env from ConfigMaps and Secrets), run on every
# `make test`; the whole suite is `sudo test/conformance/run.sh`.
CONFORMANCE_SUBSET := HostPort|DNS should resolve DNS of partial qualified names|DNS should provide DNS for services|DNS should provide /etc/hosts entries|Services should serve a basic endpoint from pods|Services should be able to create a functioning NodePort service|consumable via (the )?environment

# The README's test command.
test:
	$(GO) test -count=1 -timeout 60m ./...
	FOCUS='$(CONFORMANCE_SUBSET)' SERIAL=0 PROCS=2 CONFORMANCE_NAME=conformance-subset \
	  CONFORMANCE_RESULTS=$${TMPDIR:-/tmp} test/conformance/run.sh

bench: build
	bench/datastore/run.sh
	bench/server/run.sh
	bench/agent/run.sh
	bench/network/run.sh
	bench/lb/run.sh
	bench/dns/run.sh
	bench/lint/run.sh
	bench/binary/run.sh

# The whole conformance suite, parallel and serial passes (about an hour).
conformance:
	test/conformance/run.sh

clean:
	rm -rf bin dist
