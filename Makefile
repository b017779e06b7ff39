# Two commands do all the set-up on a fresh machine: `make quickstart` and `make test`. Both are idempotent:
# the venv is created once and reinstalled only when pyproject.toml or constraints.txt change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.resnas-installed
# The icon fonts NNI's dashboard names (fabric-icons-*.woff), from the npm package that ships exactly those files.
ICON_FONTS_PACKAGE := @fluentui/font-icons-mdl2@8.5.12
ICON_FONTS := strategies/launch/dashboard_fonts

.PHONY: install quickstart test ssh-server browser benchmark benchmark-throughput clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools<81" wheel
	# --no-build-isolation: build with the venv's pinned setuptools instead of fetching another one.
	$(BIN)/pip install --quiet --no-build-isolation -c constraints.txt -e ".[test]"
	# The dashboard loads its icon fonts from a CDN, which a machine without internet cannot reach: the manager serves
	# them from its own port (strategies/launch/dashboard_assets.js). Fetched here, not committed: the fonts are under
	# the Microsoft Fabric Assets License, not MIT. Without npm the dashboard still works, its icons empty boxes.
	@test -f $(ICON_FONTS)/fabric-icons-a13498cf.woff || { command -v npm >/dev/null && \
		rm -rf $(ICON_FONTS)/.npm-pack && mkdir -p $(ICON_FONTS)/.npm-pack && \
		npm pack --silent --pack-destination $(ICON_FONTS)/.npm-pack $(ICON_FONTS_PACKAGE) >/dev/null && \
		tar -xzf $(ICON_FONTS)/.npm-pack/*.tgz -C $(ICON_FONTS)/.npm-pack && \
		mv $(ICON_FONTS)/.npm-pack/package/fonts/*.woff $(ICON_FONTS)/.npm-pack/package/LICENSE $(ICON_FONTS)/ && \
		rm -rf $(ICON_FONTS)/.npm-pack; } || \
		echo "install: could not fetch $(ICON_FONTS_PACKAGE) with npm; the dashboard's icons will be empty boxes"
	@touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/resnas quickstart

test: $(STAMP) ssh-server browser
	$(BIN)/python -m pytest

# tests/test_remote.py runs NNI's remote training service against a real OpenSSH server on 127.0.0.1 (its own
# config, port and throwaway keys; nothing is started here). Installed once when missing and we are root;
# otherwise that test skips and says why.
ssh-server:
	@command -v sshd >/dev/null || test -x /usr/sbin/sshd || test "$$(id -u)" != 0 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) || \
		echo "ssh-server: could not install openssh-server; tests/test_remote.py will skip"

# tests/test_dashboard_browser.py drives Debian's headless Chromium (/usr/bin/chromium) through the dashboard.
# Installed once when missing and we are root; otherwise that test skips and says why.
browser:
	@test -x /usr/bin/chromium || test "$$(id -u)" != 0 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
		echo "browser: could not install chromium; tests/test_dashboard_browser.py will skip"

benchmark: $(STAMP)
	$(BIN)/python benchmarks/supernet_cost.py

# fit / supernet step / device-resident data against a bare PyTorch loop (CPU: ~2 min; a GPU: ResNet-50/56 in bf16).
benchmark-throughput: $(STAMP)
	$(BIN)/python -W ignore benchmarks/train_throughput.py

# The prepared GPU check (benchmarks/gpu_check.py; starts no job after 7 min): the lent GPU machine has torch, timm
# and Lightning but neither NNI nor this venv, so it runs that machine's python, with no install step. One JSON line;
# GPU_CHECK_OUT gets it too (after every job, so a run cut short keeps what it measured).
.PHONY: gpu-check
GPU_PYTHON ?= python
GPU_CHECK_OUT ?= gpu_check.json
gpu-check:
	PYTHONPATH=. $(GPU_PYTHON) benchmarks/gpu_check.py --device cuda --preset full --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) .pytest_cache runs
