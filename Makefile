# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip on this platform takes torch/torchvision from local files when these versions are pinned.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install sample clean-demo bench system-deps

$(BIN)/vtpipe: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/vtpipe

sample: install
	$(BIN)/python data/sample/make_sample.py --out data/sample/videos

# The same command a wheel install offers: generates the sample clips into outputs/sample and runs every stage.
demo: install
	VTPIPE_QUIET=0 $(BIN)/vtpipe demo --output outputs/sample

# A real SLURM (slurm-wlm, munge) for the cluster tests: apt-get as root, else a note of what to install.
system-deps:
	bash scripts/install_system_deps.sh

test: install system-deps
	$(BIN)/python -m pytest -q -ra tests

# Side-by-side benchmarks at their default (few-minute) sizes; each prints ratios, none asserts.
bench: install
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/extract.py --quick
	$(BIN)/python bench/store.py
	$(BIN)/python bench/evaluate.py --only a
	$(BIN)/python bench/evaluate.py --only b
	$(BIN)/python bench/fingerprint.py --videos 20000

clean-demo:
	rm -rf outputs/sample
