# Two commands do all set-up on a fresh machine:
#   make repro   creates .venv if needed, then runs the whole study (dvc repro)
#   make test    creates .venv if needed, then runs the pipeline and every test
# PROFILE=name runs a profile from profiles/ instead of the default (see README).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env repro test test-unit test-tf test-torch test-pipeline test-regression test-notebooks lab clean-venv

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/xraylib install-kernel
	$(BIN)/dvc config --local core.analytics false || true
	touch $(STAMP)

env: $(STAMP)

repro: env
ifdef PROFILE
	$(BIN)/xraylib exp $(PROFILE)
else
	$(BIN)/dvc repro
endif

# One pytest process per framework: TensorFlow and torch never share a process.
# Nothing here writes into the workspace's tracked outputs: the pipeline tests work in
# temporary git copies, and the regression suite re-runs the study (data stages, then
# pytest --nbval over notebooks 01-05, which trains from scratch) in build/regression
# under another numeric path than its reference (oneDNN off, other thread counts), then
# compares exact outputs exactly and training figures within measured tolerances.
REGRESSION_NUMERICS ?= alt
test: env
	$(MAKE) test-unit test-tf test-torch test-pipeline test-regression

test-unit: env
	$(BIN)/python -m pytest tests/unit
test-tf: env
	$(BIN)/python -m pytest tests/tf
test-torch: env
	$(BIN)/python -m pytest tests/torch
test-pipeline: env
	$(BIN)/python -m pytest tests/pipeline
test-regression: env
	$(BIN)/python -m xraylib regression --numerics $(REGRESSION_NUMERICS)
	$(BIN)/python -m pytest tests/regression
# Alias kept for habit: the notebooks are tested by the regression suite.
test-notebooks: test-regression

lab: env
	$(BIN)/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
