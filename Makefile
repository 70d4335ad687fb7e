# Two commands: `make demo` (the whole chain on a generated example plate) and `make test`.
# Both create or reuse .venv and install the package with every extra it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cellfusion-installed
DEMO   ?= demo_output
# pytest's workers: CI machines here have 2 cores
PYTEST_ARGS ?=

.PHONY: demo test install clean-demo

install: $(STAMP)

# Reinstalled when pyproject.toml changes. torch/torchvision come from PyPI through timm
# (the documented install path; CUDA builds that also run on CPU).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/profiler example-plate $(DEMO)/plate
	$(BIN)/profiler extract $(DEMO)/plate --pipeline example -o $(DEMO)/extract
	$(BIN)/fusion train $(DEMO)/extract/profiles.parquet --label Metadata_Compound -o $(DEMO)/model
	$(BIN)/fusion report $(DEMO)/model
	@echo
	@echo "Report: $(abspath $(DEMO))/model/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO)
