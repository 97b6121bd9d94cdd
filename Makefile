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

.PHONY: all build run test lint vet staticcheck fmt-check fuzz bench clean install uninstall deb

all: build

# -buildvcs=auto stamps the git revision (service.version in telemetry)
# even where GOFLAGS turns it off; outside a git checkout it does nothing.
# VERSION (git describe, when git and a checkout are there) is what
# imapguard -version prints; without it, the module version or "devel".
# REVISION is the commit, for where Go's own VCS stamping is off or
# cannot read the checkout (a git worktree, a tarball with .git).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null)
build:
	$(GO) build -buildvcs=auto -ldflags "$(if $(VERSION),-X main.version=$(VERSION)) $(if $(REVISION),-X main.revision=$(REVISION))" -o $(BIN)/ ./cmd/imapguard ./cmd/imapd ./cmd/imapload

# The binary, the systemd unit and an example /etc/imapguard/imapguard.toml
# (cmd/imapguard/systemd/README.md), under DESTDIR when set (for staging a
# package). An existing imapguard.toml is kept. Nothing else is done:
# no user is created, systemd is not told (systemctl daemon-reload).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/imapguard
SYSCONFDIR ?= /etc
UNIT       := cmd/imapguard/systemd/imapguard.service
EXAMPLE    := cmd/imapguard/systemd/imapguard.toml

install:
	$(GO) build -buildvcs=auto -o $(BIN)/imapguard ./cmd/imapguard
	sed -e 's|/usr/local/bin/imapguard|$(BINDIR)/imapguard|g' \
	    -e 's|/etc/imapguard/|$(SYSCONFDIR)/imapguard/|g' $(UNIT) > $(BIN)/imapguard.service
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/imapguard
	install -m 0755 $(BIN)/imapguard $(DESTDIR)$(BINDIR)/imapguard
	install -m 0644 $(BIN)/imapguard.service $(DESTDIR)$(UNITDIR)/imapguard.service
	install -m 0644 config/default.toml $(EXAMPLE) $(DESTDIR)$(DOCDIR)/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/imapguard/imapguard.toml ]; then \
	  echo "kept $(DESTDIR)$(SYSCONFDIR)/imapguard/imapguard.toml (the example is $(DESTDIR)$(DOCDIR)/imapguard.toml)"; \
	else \
	  echo "install -m 0644 $(EXAMPLE) $(DESTDIR)$(SYSCONFDIR)/imapguard/imapguard.toml"; \
	  install -m 0644 $(EXAMPLE) $(DESTDIR)$(SYSCONFDIR)/imapguard/imapguard.toml; \
	fi

# What install put in place, but the configuration.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/imapguard $(DESTDIR)$(UNITDIR)/imapguard.service
	rm -rf $(DESTDIR)$(DOCDIR)

# A .deb of make install PREFIX=/usr, built with dpkg-deb (Debian's
# dpkg); the maintainer scripts (cmd/imapguard/systemd/deb) create the
# imapguard user. DEB_VERSION: the last vX.Y.Z tag as git describe puts
# it, else 0.0.0~git and the commit.
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo "$$v" | sed 's/^v//' || \
	echo 0.0.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEB_ROOT    := $(BIN)/deb-root

deb:
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr BIN=$(BIN)
	install -d $(DEB_ROOT)/DEBIAN
	install -m 0755 cmd/imapguard/systemd/deb/postinst cmd/imapguard/systemd/deb/prerm \
	    cmd/imapguard/systemd/deb/postrm $(DEB_ROOT)/DEBIAN/
	echo /etc/imapguard/imapguard.toml > $(DEB_ROOT)/DEBIAN/conffiles
	printf '%s\n' 'Package: imapguard' 'Version: $(DEB_VERSION)' 'Architecture: $(DEB_ARCH)' \
	    'Maintainer: imapguard developers <postmaster@localhost>' 'Section: mail' 'Priority: optional' \
	    'Depends: passwd' 'Recommends: systemd' \
	    "Installed-Size: $$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)" \
	    'Homepage: https://github.com/imapguard/imapguard' \
	    'Description: IMAP-aware reverse proxy with connection limits' \
	    ' imapguard terminates IMAP clients (STARTTLS, implicit TLS), applies' \
	    ' per-address, per-user and rate limits before login, logs in to the' \
	    ' upstream IMAP server on the client'"'"'s behalf and relays the session.' \
	    > $(DEB_ROOT)/DEBIAN/control
	dpkg-deb --root-owner-group --build $(DEB_ROOT) $(BIN)/imapguard_$(DEB_VERSION)_$(DEB_ARCH).deb

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
# curl and openssl suites need Debian's dovecot-imapd, curl and openssl,
# the alert rules' checks promtool (Debian's prometheus) (.ci/run installs
# them); with CI set, a missing one fails the run.
#
# The packages whose tests relay sessions through a proxy (RELAYED) run a
# second time with IMAPGUARD_RELAY=goroutines (issue 14): the first run
# relays with the default, the event loop where it is supported. The
# second leaves out (RELAY_ONCE) what runs both relays itself (the TestLoop
# tests, TestRelayChunks) and what relays nothing a relay could change:
# packaging (TestMakeDeb, TestMakeInstall) and logins only
# (TestForwardClientDovecotPenalty, TestFail2banFilter), which would
# otherwise double the second run. test/report prints one summary line
# for both.
TESTFLAGS  := -race -count=1 -timeout 15m
RELAYED    := ./proxy ./proxy/admin ./proxy/fleet ./proxy/telemetry ./test ./cmd/imapguard
RELAY_ONCE := ^(TestLoop.*|TestRelayChunks|TestMakeDeb|TestMakeInstall|TestForwardClientDovecotPenalty|TestFail2banFilter)$$
test: fmt-check vet staticcheck $(PEBBLE)
	@$(GO) build -o $(BIN)/test-report ./test/report
	$(BIN)/test-report -go $(GO) $(TESTFLAGS) ./... \
	  --then IMAPGUARD_RELAY=goroutines $(TESTFLAGS) -skip '$(RELAY_ONCE)' $(RELAYED)

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
	@set -e; for pkg in ./proxy/imapwire ./proxy/admin ./config ./proxy ./test; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	  done; \
	done

# Micro-benchmarks of the framers, the copy loop and the pre-auth parser,
# what telemetry costs per connection (proxy/telemetry/README.md), then
# the side-by-side benchmark (test/bench/README.md): the upstream
# directly, imapguard (relay "auto", and "goroutines"), HAProxy and
# nginx's mail proxy, on loopback, then issue 14's targets computed from
# it. Run as root; installs haproxy, nginx-light, libnginx-mod-mail and
# dovecot-imapd when missing. About an hour with the defaults on 2 cores
# (held at 5,000 and up to 50,000 sessions); for a quick look:
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
