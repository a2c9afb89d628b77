# `make demo` and `make test` do all the set-up on a fresh machine: they create .venv, install the
# CPU build of PyTorch when no torch is present (a GPU user's own CUDA build is kept), then the package.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_CPU := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test e2e bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/automl-dnn fit builtin:breast_cancer --out runs/demo --model runs/demo/model --time-budget 60

test: $(STAMP)
	$(BIN)/python -m pytest -q

e2e: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	$(BIN)/python -m pytest -q -m e2e tests/e2e

clean:
	rm -rf $(VENV) runs build *.egg-info
