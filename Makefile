# The two commands of the README: `make quickstart` (the main job) and `make test`.
# Both create .venv on first use with the versions the suite last passed with (constraints.txt);
# torch is pinned so pip takes it from the local wheel cache. `make check` is the fast tier for
# the edit loop; `make constraints` records the venv's versions after an upgrade that passed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := $(wildcard autofreeze tests plugins benchmarks)
# test processes side by side (pytest-xdist), each test file on one of them, in the order
# tests/conftest.py gives (the longest first; xdist would reorder by test count); each uses one torch
# thread then (tests/conftest.py), so two of them fill two cores instead of fighting over them;
# OpenMP threads of the processes the tests start sleep rather than spin while they wait
TEST_WORKERS ?= 2
PYTEST := OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: test check quickstart lint venv clean constraints

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' $(foreach p,$(wildcard plugins/*/pyproject.toml),-e ./$(dir $(p)))
	touch $(STAMP)

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium for tests/review/test_browser.py"; \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) </dev/null || \
	  echo "chromium not installed: the browser tests will be skipped"; }
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(PYTEST)

# the fast tier: lint, then every test not marked slow (under 3 minutes on 2 cores)
check: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(PYTEST) -m "not slow"

# record the versions of the venv (after `pip install -U ...` and a `make test` that passed)
constraints: $(STAMP)
	{ echo "# The versions the test suite last passed with (make constraints rewrites this file)."; \
	  echo "# make installs with them (pip -c); pyproject.toml keeps ranges for library users."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^autofreeze'; } > constraints.txt

quickstart: $(STAMP)
	$(BIN)/autofreeze search studies/quickstart.toml

lint: $(STAMP)
	$(BIN)/ruff check --fix $(SRC)
	$(BIN)/ruff format $(SRC)

clean:
	rm -rf $(VENV) studies/*.db studies/.cache studies/*-artifacts
