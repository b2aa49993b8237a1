# wispd — two commands:
#   make run    installs missing build prerequisites, builds release, starts wispd on the embedded default
#   make test   installs missing build and test prerequisites, then runs the whole test suite
# Prerequisites are installed only when missing (Debian/Ubuntu, as root or with sudo).

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo
VENV := .venv
PY := $(VENV)/bin/python

BUILD_PKGS := build-essential pkg-config clang libclang-dev
TEST_PKGS := nftables iproute2 curl openssl
# daemons the tests start privately (own config, loopback port): installed with their system
# service kept from starting and disabled
TEST_DAEMONS := rspamd clamav-daemon dovecot-core dovecot-imapd dovecot-lmtpd
# their services (clamav-daemon brings clamav-freshclam, which must not fetch or run either)
TEST_SERVICES := rspamd clamav-daemon clamav-daemon.socket clamav-freshclam dovecot
# the milters and policy service the SMTP bench's Postfix peer runs (private instances too)
BENCH_DAEMONS := opendkim opendmarc postfix-policyd-spf-python

.PHONY: run test build release deps-build deps-test check unit integration bench fuzz clean

run: deps-build release
	./target/release/wispd serve

test: deps-build deps-test
	$(CARGO) build --locked --bins
	$(CARGO) test --locked --workspace
	WISPD_BIN=$(CURDIR)/target/debug/wispd $(PY) -m pytest -q tests

release:
	$(CARGO) build --locked --release --bins

check:
	$(CARGO) check --workspace --all-targets

# Installs the Debian packages in $(1) that are not installed yet.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# Installs the Debian packages in $(1) that are not installed yet without their postinst starting
# a service (a policy-rc.d that refuses, for invoke-rc.d and deb-systemd-invoke alike, kept only
# for the install when none was there), then disables (and under systemd stops) the services
# named $(2).
define apt_install_nostart
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing (services not started):$$missing"; \
	  own=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null && $(SUDO) chmod 755 /usr/sbin/policy-rc.d && own=1; \
	  fi; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	  rc=$$?; [ -z "$$own" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d; [ $$rc = 0 ] || exit $$rc; \
	  for s in $(2); do \
	    if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now $$s >/dev/null 2>&1; \
	    else $(SUDO) systemctl disable $$s >/dev/null 2>&1; $(SUDO) update-rc.d $$s disable >/dev/null 2>&1; fi; \
	  done; true; \
	fi
endef

deps-build:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first"; exit 1; }
	$(call apt_install,$(BUILD_PKGS))

deps-test:
	$(call apt_install,$(TEST_PKGS))
	$(call apt_install_nostart,$(TEST_DAEMONS),$(TEST_SERVICES))
	@command -v python3 >/dev/null || $(SUDO) apt-get install -y -qq python3 python3-venv
	@[ -x $(PY) ] || python3 -m venv $(VENV) || { $(SUDO) apt-get install -y -qq python3-venv && python3 -m venv $(VENV); }
	@$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# Every bench runs even when one fails; the failed ones are named at the end (exit 1).
BENCHES := firewall blocklist smtp sieve outbound lists import imap pop3 authflood lfd

bench: deps-build deps-test release
	@# the peers run as private instances on high ports: no system Postfix config, no system Dovecot
	@echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections
	$(call apt_install_nostart,iperf3 ipset iptables conntrack postfix dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-sieve fail2ban python3-pyinotify $(BENCH_DAEMONS),postfix dovecot opendkim opendmarc fail2ban)
	@$(PY) -m pip install -q --disable-pip-version-check argon2-cffi
	@failed=""; for b in $(BENCHES); do \
	  echo "== bench $$b"; \
	  if [ $$b = firewall ]; then $(CARGO) bench --locked --bench firewall || failed="$$failed $$b"; \
	  else $(PY) benches/$$b.py --bin $(CURDIR)/target/release/wispd || failed="$$failed $$b"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "benches that failed:$$failed"; exit 1; fi

# Coverage-guided fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain (`-s none`: no
# sanitizer, which would need nightly), from the committed seeds (fuzz/seeds/) and the corpus
# it grows (fuzz/corpus/, not committed). Each target runs FUZZ_SECONDS; a crash is kept under
# fuzz/artifacts/<target>/ and the target is named at the end (exit 1).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := smtp_codec imap_framing blocklist_parse config_load api_json managesieve_codec pop3_codec sieve_script

fuzz: deps-build
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  mkdir -p fuzz/corpus/$$t; \
	  (cd fuzz && $(CARGO) fuzz run -s none $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048) || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that found a crash:$$failed (see fuzz/artifacts/)"; exit 1; fi
