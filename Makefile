# The two commands of the README: `make quickstart` (the main job) and `make test`.
# Both create .venv on first use; torch is pinned so pip takes it from the local wheel cache.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := $(wildcard autofreeze tests plugins benchmarks)

.PHONY: test quickstart lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach p,$(wildcard plugins/*/pyproject.toml),-e ./$(dir $(p)))
	touch $(STAMP)

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium for tests/test_browser.py"; \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) </dev/null || \
	  echo "chromium not installed: the browser tests will be skipped"; }
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/python -m pytest -q

quickstart: $(STAMP)
	$(BIN)/autofreeze search studies/quickstart.toml

lint: $(STAMP)
	$(BIN)/ruff check --fix $(SRC)
	$(BIN)/ruff format $(SRC)

clean:
	rm -rf $(VENV) studies/*.db studies/.cache studies/*-artifacts
