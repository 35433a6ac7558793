# vitalwire: the two set-up commands are `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo test bench lint system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test]"
	touch $@ $(STAMP)

## The live demo: embedded broker, simulated devices, gateway, pipeline, DuckDB.
demo: $(STAMP)
	$(VENV)/bin/vitalwire demo

## Debian packages the tests talk to: a real mosquitto broker, Chromium for the page tests.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

## The whole test suite.
test: $(TSTAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider

## Benchmarks (prints throughput, latency percentiles, memory, ratios against baselines).
bench: $(TSTAMP) system-deps
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/fhir.py
	$(PY) benchmarks/ble.py
	$(PY) benchmarks/alerts.py
	$(PY) benchmarks/dashboard.py

lint: $(TSTAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
