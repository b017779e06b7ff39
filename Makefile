# Two commands do all the set-up on a fresh machine: `make quickstart` and `make test`. Both are idempotent:
# the venv is created once and reinstalled only when pyproject.toml or constraints.txt change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.resnas-installed

.PHONY: install quickstart test ssh-server benchmark benchmark-throughput clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools<81" wheel
	# --no-build-isolation: build with the venv's pinned setuptools instead of fetching another one.
	$(BIN)/pip install --quiet --no-build-isolation -c constraints.txt -e ".[test]"
	@touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/resnas quickstart

test: $(STAMP) ssh-server
	$(BIN)/python -m pytest

# tests/test_remote.py runs NNI's remote training service against a real OpenSSH server on 127.0.0.1 (its own
# config, port and throwaway keys; nothing is started here). Installed once when missing and we are root;
# otherwise that test skips and says why.
ssh-server:
	@command -v sshd >/dev/null || test -x /usr/sbin/sshd || test "$$(id -u)" != 0 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) || \
		echo "ssh-server: could not install openssh-server; tests/test_remote.py will skip"

benchmark: $(STAMP)
	$(BIN)/python benchmarks/supernet_cost.py

# fit / supernet step / device-resident data against a bare PyTorch loop (CPU: ~2 min; a GPU: ResNet-50/56 in bf16).
benchmark-throughput: $(STAMP)
	$(BIN)/python -W ignore benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache runs
