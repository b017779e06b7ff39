# Two commands do all the set-up on a fresh machine: `make quickstart` and `make test`. Both are idempotent:
# the venv is created once and reinstalled only when pyproject.toml or constraints.txt change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.resnas-installed

.PHONY: install quickstart test benchmark benchmark-throughput clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools<81" wheel
	# --no-build-isolation: build with the venv's pinned setuptools instead of fetching another one.
	$(BIN)/pip install --quiet --no-build-isolation -c constraints.txt -e ".[test]"
	@touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/resnas quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/supernet_cost.py

# fit / supernet step / device-resident data against a bare PyTorch loop (CPU: ~2 min; a GPU: ResNet-50/56 in bf16).
benchmark-throughput: $(STAMP)
	$(BIN)/python -W ignore benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache runs
