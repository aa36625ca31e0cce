# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf

.PHONY: demo test test-unit lint typecheck proto proto-check buf-lint bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3 setuptools==84.2.1
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $(BUF)

demo: $(STAMP)
	$(BIN)/fedscore demo

test: $(STAMP) $(BUF) proto-check buf-lint lint typecheck
	$(BIN)/python -m pytest -q

# Only the tests that start no server and no process (see tests/conftest.py).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. proto/fedscore/v1/*.proto

proto-check: proto
	git diff --exit-code -- fedscore/v1 || (echo "generated wire code is stale: run 'make proto' and commit" && exit 1)

buf-lint: $(BUF)
	$(BUF) lint

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) node_modules
