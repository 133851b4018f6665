# Seg-R1, distributed: the front-door targets. `make train` and `make test` install first when needed.
# CPU install: torch/torchvision pins that this machine's wheel store serves; GPU users: see README.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
CONFIG ?= configs/local_cpu.yaml
PYTEST_ARGS ?=

.PHONY: install train test bench lint clean test-vllm

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	# sam2 compiles an optional CUDA extension; build it against the torch above, without CUDA.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation sam2
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: install
	$(VENV)/bin/segr1 train --config $(CONFIG) $(ARGS)

test: install
	$(PY) -m pytest -m "not vllm" $(PYTEST_ARGS)

bench: install
	$(PY) bench/metrics.py
	$(PY) bench/reward_pool.py
	$(PY) bench/weight_sync.py
	$(PY) bench/pipeline.py
	$(PY) bench/scheduling.py
	$(PY) bench/rollout.py

lint: install
	$(VENV)/bin/ruff check segr1 rollout reward_server learner cluster tests bench

clean:
	rm -rf runs .cache .pytest_cache
