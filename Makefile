# oms-connector. `make help` lists the targets; CI runs the same ones (.ci/run).

CARGO ?= cargo
export RUST_BACKTRACE ?= 0
# As in the container image (deploy/docker/Dockerfile): large message bodies go back to the
# system when freed, which keeps a worker's memory flat through a FULL snapshot.
export MALLOC_MMAP_THRESHOLD_ ?= 131072
# What omsc_build_info{revision} says; read at start, so a commit rebuilds nothing.
export OMSC_REVISION ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: services
services: ## Bring up (or install) PostgreSQL and RabbitMQ on their standard local ports
	@scripts/services.sh

.PHONY: build
build: ## Build every binary (debug)
	$(CARGO) build --bins

.PHONY: run
run: services ## Start the connector: migrate, then every module (and the service-bus gateway when OMSC_OMS_URL is set) in the foreground
	$(CARGO) build --release --bin omsc
	./target/release/omsc migrate
	./target/release/omsc run --all

.PHONY: test
test: services ## Run every test against the local PostgreSQL and RabbitMQ (and Chromium)
	@scripts/browser.sh >/dev/null
	$(CARGO) build --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast -E 'not binary(restart)'; \
	else \
		$(CARGO) test --workspace --exclude integration-tests --no-fail-fast && \
		$(CARGO) test -p integration-tests --test it --no-fail-fast; \
	fi

.PHONY: test-restart
test-restart: services ## Restart the local broker and database under a running fleet (runs alone)
	$(CARGO) build --bins
	$(CARGO) test -p integration-tests --test restart -- --test-threads 1 --nocapture

# The profile the benchmark binaries are built with (CI smoke runs use dev).
PROFILE ?= release
BIN_DIR = target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: bench
bench: services ## Measure the connector against the machine's ceilings; writes docs/benchmarks.md
	$(CARGO) build --profile $(PROFILE) --bins
	$(BIN_DIR)/omsc-bench --out docs/benchmarks.md

.PHONY: bench-quick
bench-quick: services ## A short benchmark run (smoke test; figures are indicative only)
	$(CARGO) build --profile $(PROFILE) --bins
	$(BIN_DIR)/omsc-bench --quick

.PHONY: fuzz
fuzz: ## Fuzz the protocol parsers for 15 minutes (FUZZ_SECONDS to change)
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),900)

.PHONY: fuzz-short
fuzz-short: ## Fuzz the protocol parsers for a minute (CI)
	scripts/fuzz.sh 60

.PHONY: deploy-check
deploy-check: ## Validate deploy/: Kubernetes and KEDA schemas, kustomize, compose, Dockerfile, YAML lint, alert rules, dashboard
	@scripts/deploy-check.sh
	@scripts/monitoring-check.sh

.PHONY: definitions
definitions: ## Regenerate deploy/rabbitmq/definitions.json (and gateway-definitions.json) from the code (omsc topology definitions)
	$(CARGO) run -q --bin omsc -- topology definitions > deploy/rabbitmq/definitions.json
	$(CARGO) run -q --bin omsc -- topology definitions --gateway > deploy/rabbitmq/gateway-definitions.json

.PHONY: scale-out
scale-out: services ## Run replicas of each worker under load with a rolling restart; writes docs/scale-out.md
	$(CARGO) build --profile $(PROFILE) --bins
	$(BIN_DIR)/omsc-bench --scale-out --out docs/scale-out.md

.PHONY: check
check: spec-check ## Formatting, lints (warnings are errors) and the spec table
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p omsc --features simulate --all-targets -- -D warnings

.PHONY: spec-check
spec-check: ## Re-derive the spec's field table from the XML (MOM_SPEC, default ../shared/protocol/mom-spec); skipped without it
	@scripts/spec-check.sh

.PHONY: report-screenshot
report-screenshot: services ## Run the connector under simulated load and take docs/report.png
	@scripts/report-screenshot.sh

.PHONY: ci
ci: check deploy-check test ## What CI runs
