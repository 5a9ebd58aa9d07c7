# The two README commands: `make demo` (set up, then run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup demo test lint bench-reference

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev,ray,sustaingym,starcraft]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/drigm demo

lint: setup
	$(VENV)/bin/ruff check --output-format concise .
	$(VENV)/bin/ruff format --check .

# pytest exit 5 means no test ran: that is a failure here, never a pass.
test: lint
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

bench-reference: setup
	$(PY) benchmarks/bench_reference.py
