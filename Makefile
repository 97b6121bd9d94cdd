# imapguard — see README.md. The two commands a new user needs:
#   make run    the proxy in front of the bundled upstream, on loopback
#   make test   the whole test suite (race detector on)
#   make soak   the soak and fault suite, about 15 minutes (test/soak/README.md; not in make test)

GO          ?= go
BIN         := bin
STATICCHECK_VERSION := v0.8.2
GOBIN_DIR   := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN_DIR)/staticcheck
PEBBLE_VERSION := v2.10.1
PEBBLE      := $(GOBIN_DIR)/pebble
FUZZTIME    ?= 60s

.PHONY: all build run test lint vet staticcheck fmt-check fuzz bench clean

all: build

# -buildvcs=auto stamps the git revision (service.version in telemetry)
# even where GOFLAGS turns it off; outside a git checkout it does nothing.
build:
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/imapguard ./cmd/imapd ./cmd/imapload

# The bundled upstream (cmd/imapd: user demo, password demo, 10 messages)
# on 127.0.0.1:2143, and imapguard with its embedded demo configuration
# (config/demo.toml) in front of it: STARTTLS on 127.0.0.1:1143, implicit
# TLS on 127.0.0.1:1993, a self-signed certificate. Ctrl-C stops both.
run: build
	@$(BIN)/imapd -listen 127.0.0.1:2143 & up=$$!; \
	trap 'kill $$up 2>/dev/null; wait $$up 2>/dev/null' EXIT INT TERM; \
	echo; \
	echo "imapguard on 127.0.0.1:1143 (STARTTLS) and 127.0.0.1:1993 (imaps)"; \
	echo "  -> bundled upstream on 127.0.0.1:2143 (user demo, password demo, OAuth token demo-token)"; \
	echo "The certificate is self-signed (-k tells curl to accept it). From another terminal:"; \
	echo "  curl -k 'imaps://127.0.0.1:1993/' --user demo:demo                        # list mailboxes"; \
	echo "  curl -k 'imaps://127.0.0.1:1993/INBOX;MAILINDEX=1' --user demo:demo       # read message 1"; \
	echo "  curl -k --ssl-reqd 'imap://127.0.0.1:1143/' --user demo:demo              # STARTTLS"; \
	echo "  curl -k 'imaps://127.0.0.1:1993/' --user demo --oauth2-bearer demo-token  # OAUTHBEARER"; \
	echo "  openssl s_client -quiet -starttls imap -connect 127.0.0.1:1143           # by hand"; \
	echo "  $(BIN)/imapguard -check                                                  # effective settings"; \
	echo "  $(BIN)/imapguard who                                                     # sessions (admin API, 127.0.0.1:8143)"; \
	echo "  curl -s 127.0.0.1:9143/metrics | grep ^imapguard_                         # Prometheus metrics"; \
	echo; \
	$(BIN)/imapguard

# The whole suite with the race detector, after the gofmt check, vet and
# staticcheck. It runs through test/report, which prints go test's
# results and ends with one line naming every suite that was skipped and
# why ("skipped: none" when everything ran). Pebble, the ACME suite's
# certificate authority, is installed like staticcheck when missing; the
# tests find it in $(GOBIN_DIR) even if that is not in PATH. The Dovecot,
# curl and openssl suites need Debian's dovecot-imapd, curl and openssl
# (.ci/run installs them); with CI set, a missing one fails the run.
test: fmt-check vet staticcheck $(PEBBLE)
	@$(GO) build -o $(BIN)/test-report ./test/report
	$(BIN)/test-report -go $(GO) -race -count=1 -timeout 15m ./...

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

$(PEBBLE):
	GOBIN=$(GOBIN_DIR) $(GO) install github.com/letsencrypt/pebble/v2/cmd/pebble@$(PEBBLE_VERSION)

# Long fuzzing, FUZZTIME per target (make test runs only the seed corpora).
fuzz:
	@set -e; for pkg in ./proxy/imapwire ./proxy/admin ./config ./proxy; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	  done; \
	done

# Micro-benchmarks of the framers, the copy loop and the pre-auth parser,
# what telemetry costs per connection (proxy/telemetry/README.md), then
# the side-by-side benchmark (test/bench/README.md): the upstream
# directly, imapguard, HAProxy and nginx's mail proxy, on loopback. Run as
# root; installs haproxy, nginx-light, libnginx-mod-mail and dovecot-imapd
# when missing. About 15-20 minutes with the defaults; for a quick look:
#   make bench BENCHFLAGS="-duration 2s -runs 1"
BENCHFLAGS ?=

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./proxy ./proxy/imapwire
	$(GO) test -run '^$$' -bench LoginTelemetry -benchmem -count 5 ./test
	$(GO) run ./test/bench -out $(BIN)/bench.json $(BENCHFLAGS)

# The soak and fault suite (test/soak/README.md): every phase with its
# defaults (10,000 sessions for 10 minutes, 100,000 abrupt ends, the
# upstream faults, the connection flood). Run as root: it raises
# RLIMIT_NOFILE. For a quick look:
#   make soak SOAKFLAGS="-duration 1m -sessions 1000 -abrupt 10000"
SOAKFLAGS ?=

.PHONY: soak
soak:
	$(GO) run ./test/soak -out $(BIN)/soak.json $(SOAKFLAGS)

clean:
	rm -rf $(BIN)
