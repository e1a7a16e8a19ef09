# The two commands of the quick start: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench evaluate install system-deps dashboards clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: a real Prometheus server and promtool; docker-compose to validate
# the compose stack (no Docker engine is needed for that).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v docker-compose >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus docker-compose; }

# Benchmarks print figures measured side by side in one run and write docs/benchmarks.md.
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	cd bench && ../$(BIN)/python run.py
	$(MAKE) evaluate

# The continual-learning quality harness, writing the shipped report: every built-in scenario, the
# product and the baselines of the headline, one seed (about 13 min on 2 cores).
evaluate: $(STAMP)
	$(BIN)/perennial evaluate --scenario all --strategies product,frozen,naive,replay,cumulative --seeds 0 --out docs/evaluation.md

dashboards: $(STAMP)
	$(BIN)/python observability/build_dashboards.py

demo: $(STAMP)
	$(BIN)/perennial demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -ra -n 2 --durations=20

clean:
	rm -rf $(VENV) var
