# Two commands from a fresh clone (each installs what it needs into .venv):
#   make run    the guide's pipeline with quick defaults on the CPU
#   make test   the test suite (unit tests, every notebook under nbval, the browser tests (JupyterLab, the rendered site) if chromium is installed)
#   make lab    JupyterLab on the notebooks
#   make docs   the rendered tutorial in build/site (open build/site/index.html)
# GPU users: make run TORCH="torch==2.13.0 --index-url <your CUDA wheel index>" DEVICE=auto

PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
# quick defaults for `make run`; the guide's full run is `make run SAMPLES=10000 EPOCHS=100 SIZE=medium`
SAMPLES ?= 2000
EPOCHS  ?= 10
SIZE    ?= small
DEVICE  ?= cpu
# test workers (pytest-xdist): one per core of the 2-core machines the suite is sized for
TEST_WORKERS ?= 2

.PHONY: run test lab docs benchmark anchors clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/trc pipeline $(SAMPLES) $(EPOCHS) $(SIZE) --device $(DEVICE)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# JupyterLab on the notebooks (open the URL it prints)
lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks

# the rendered tutorial: every notebook executed with its quick defaults, the docs pages, the results pages
docs: $(VENV)/.installed
	$(BIN)/python -m trc_lib.interfaces.site --output build/site

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/guide_pipeline.py

# the fastest optimizers for benchmarks/anchors.py (never needed by the tests or `make run`): acados
# from the comma-deps-acados wheel, which also drops a slim CasADi over the real one, put back after
anchors: $(VENV)/.installed
	version=$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("casadi"))') && \
	$(BIN)/pip install --quiet --no-deps comma-deps-acados && \
	$(BIN)/pip install --quiet --force-reinstall --no-deps "casadi==$$version"

clean:
	rm -rf $(VENV) outputs/* data/* build
