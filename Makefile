# The two commands of the quick start: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench evaluate install constraints system-deps dashboards clean

# Everything (serve, learn, evaluate, demo and the dev tools), at the exact versions of constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Rewrite constraints.txt from the environment `make install` built (after changing a range or adding
# a dependency in pyproject.toml, and testing it).
constraints: $(STAMP)
	{ echo "# Exact versions tested: pip install -c constraints.txt '.[<extras>]' (make install, Dockerfile)."; \
	  echo "# Regenerate with 'make constraints' after changing pyproject.toml."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt

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
# product, the baselines of the headline and the product with an operator, one seed (about 16 min on 2 cores).
evaluate: $(STAMP)
	$(BIN)/perennial evaluate --scenario all --strategies product,frozen,naive,replay,cumulative,operated --seeds 0 --notes docs/evaluation-targets.md --out docs/evaluation.md

dashboards: $(STAMP)
	$(BIN)/python observability/build_dashboards.py

demo: $(STAMP)
	$(BIN)/perennial demo

# ruff (lint and import order) and mypy (types), configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q -ra -n 2 --dist worksteal --durations=20

clean:
	rm -rf $(VENV) var
