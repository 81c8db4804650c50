# Two entry points for a fresh machine: `make run` (the app) and `make test` (the whole suite).
# Both create or reuse ./.venv; a second run only re-installs when a requirements file or pyproject.toml changed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --retries 10 -r requirements.txt
	$(PY) -m pip install -q --retries 10 --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q --retries 10 -r requirements-dev.txt
	touch $@

.PHONY: setup run test lint bench
setup: $(VENV)/.dev

run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run streamlit_app.py

test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.runtime
	$(PY) bench/train_throughput.py
	$(PY) bench/predict_latency.py
