# Two entry points for a fresh machine: `make book` and `make test`.
# PROFILE=tiny (CPU, default) | smoke (seconds) | paper (GPUs, the study's settings).
PROFILE ?= tiny
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is installed first and on its own: a bare requirement would pull a multi-GB CUDA
# build on CPU machines. On GPU machines set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= book,dev
PYTEST_ARGS ?=

export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
ifneq ($(PROFILE),paper)
export HF_HUB_OFFLINE := 1
endif

.PHONY: install browser base book notebooks html test test-unit test-notebooks lab lint format bench clean clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (wsg)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

## Rebuild the shipped tiny base (data/base/$(PROFILE)) from scratch at 2 torch threads, as make
## book's kernel runs; prints whether the new sha256s equal the committed ones (other CPUs may differ).
base: install
	$(PY) -m helpers.make_base --profile $(PROFILE)

## Run every notebook headless on $(PROFILE), then render the executed copies into _build/html.
book: install
	$(PY) -m helpers.book --profile $(PROFILE)

## Only execute the notebooks (into _build/executed/$(PROFILE)).
notebooks: install
	$(PY) -m helpers.book --profile $(PROFILE) --no-html

## Unit tests, then every notebook on the smoke profile, then the built-book checks.
test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

## Debian's Chromium and ChromeDriver for the rendered-book check (skipped where apt-get cannot run).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver for the book's browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "could not install chromium: the browser test will be skipped"; \
	else echo "no chromium and no root apt-get: the browser test will be skipped"; fi

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## JupyterLab on the notebooks. Jupyter refuses to start as root (the default user in containers)
## without --allow-root, so it is added only when make runs as root. LAB_ARGS adds options.
LAB_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)
LAB_ARGS ?=
lab: install
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_ROOT) $(LAB_ARGS)

lint: install
	$(VENV)/bin/ruff check helpers tests benchmarks notebooks
	$(VENV)/bin/ruff format --check helpers tests benchmarks notebooks

format: install
	$(VENV)/bin/ruff format helpers tests benchmarks notebooks
	$(VENV)/bin/ruff check --fix helpers tests benchmarks notebooks

bench: install
	$(PY) benchmarks/bench_foundation.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_geometry.py
	$(PY) benchmarks/bench_book.py

clean:
	rm -rf _build

clean-runs:
	rm -rf runs
