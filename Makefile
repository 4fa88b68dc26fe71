# Two commands for a newcomer: `make train` (set up, find the data, run the main job) and
# `make test` (set up, run the test suite; .ci/run calls exactly this). The set-up is a virtual
# environment in .venv with torch, torchvision and the project with every extra; it is redone
# only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
WEIGHTS ?= zoo/resnet20-fashionmnist/model.safetensors
FMNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: setup data train test serve export bench

setup: $(STAMP)

# A new venv holds torch's CUDA build (~6.1 GB measured on x86_64): check the disk first, so a full
# one fails here with a clear message and not 40 s later inside pip with Errno 28. (An existing
# venv, updated after a change to pyproject.toml, needs little more.)
SETUP_NEEDS_GB := 7

$(STAMP): pyproject.toml
	@free_gb=$$(df -Pk . | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ ! -x $(PY) ] && [ "$$free_gb" -lt $(SETUP_NEEDS_GB) ]; then \
		echo "make setup: only $$free_gb GB free on the disk of $$(pwd); the venv needs about" \
			"$(SETUP_NEEDS_GB) GB (torch's CUDA build). Free some space (or set up by hand with" \
			"the CPU wheels, see README) and run again." >&2; \
		exit 1; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# Fashion-MNIST: a local copy ($$PARECO_DATA, the user cache), Debian's dataset-fashion-mnist
# (installed here when apt-get can run as root), or torchvision's download into the cache.
data: $(STAMP)
	@if [ ! -d $(FMNIST_DEB) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "apt-get could not install dataset-fashion-mnist; trying the other sources"; \
	fi
	$(PY) -m pareco.data fashion-mnist

train: data
	$(PY) -m pareco.train

test: $(STAMP)
	$(PY) -m pytest -q

serve: $(STAMP)
	$(PY) -m serve --weights $(WEIGHTS)

export: $(STAMP)
	$(PY) -m export --weights $(WEIGHTS) --all --out exports/ --ort --int8

bench: $(STAMP)
	$(PY) bench/methods.py --protocol resolve --commit
