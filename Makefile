# Two entry points: `make demo` and `make test` (`make lint`, then the tests). Both build the virtualenv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint test serve bench clean

# The example channel plugin (examples/alertd-webhook) is installed like a third party's: the tests
# run it through the contract suite and in the daemon.
$(STAMP): pyproject.toml examples/alertd-webhook/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e examples/alertd-webhook
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/alertd demo --once

# The console's browser test drives Debian's Chromium (no browser download from the internet).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# Style, types and the import layers; the settings are in pyproject.toml. All three run, so that one
# run shows every finding; any finding fails it.
lint: $(STAMP)
	@status=0; \
	$(BIN)/ruff check alertd tests bench || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/fanout.py

clean:
	rm -rf $(VENV) .pytest_cache
