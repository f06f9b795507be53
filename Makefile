# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-slow bench docs clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The pinned CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test,train,images,molecules,proteins,distributed]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/molfuse demo

# Two test processes (pytest-xdist), each file's tests in one of them so module fixtures are built
# once; every process runs torch on one thread (tests/conftest.py). TEST_WORKERS=1 runs serially.
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=12

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

# The documentation site (MkDocs + Material + mkdocstrings) into site/, offline, warnings as errors.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(VENV)/.installed
	$(PY) bench/fusion_overhead.py

clean-venv:
	rm -rf $(VENV)
