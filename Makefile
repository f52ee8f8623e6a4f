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

.PHONY: env repro test test-unit test-tf test-torch test-notebooks lab clean-venv

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
# The data stages run first; nbval then executes notebooks 01-05 in order (05 reads
# the models that 03 and 04 write), so each notebook runs once per test session.
test: env
	$(BIN)/dvc repro prepare_binary prepare_multiclass
	$(MAKE) test-unit test-tf test-torch test-notebooks

test-unit: env
	$(BIN)/python -m pytest tests/unit
test-tf: env
	$(BIN)/python -m pytest tests/tf
test-torch: env
	$(BIN)/python -m pytest tests/torch
test-notebooks: env
	$(BIN)/python -m pytest --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

lab: env
	$(BIN)/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
