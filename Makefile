# Two set-up commands (README): `make demo` and `make test`. Both create .venv if absent.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-all bench bench-quick bench-gpu bench-deepbays clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m adaptive_kernels.cli demo

# A test whose xdist worker process dies (a segfault) is run once more, in a fresh worker; a failed assertion is
# never re-run. Why: jaxlib 0.10.2 crashes now and then inside XLA's compilation (3 of ~12 full runs on 2 loaded
# cores, each time in a different test, never on the re-run); README.md, "Known limitations".
# `make test` (CI) leaves out the tests marked `slow` (the longest statistical checks and notebook runs, each with a
# faster test of the same code path against an independent reference in the default set); `make test-all` runs all.
PYTEST := $(PY) -m pytest -n 2 --reruns 1 --only-rerun "crashed while running" --durations=25

test: $(STAMP)
	$(PYTEST) -m "not slow" tests

test-all: $(STAMP)
	$(PYTEST) tests

bench: $(STAMP)
	$(PY) bench/run.py

bench-quick: $(STAMP)
	$(PY) bench/run.py --quick

# Issue 14's target row on a GPU (bench/gpu_target.py; README "GPUs"): needs JAX with CUDA in .venv
# (.venv/bin/pip install "jax[cuda13]"); XLA's GPU autotuning is off unless XLA_FLAGS is set (it made the
# compilation 10x slower or worse for the same solve time). Writes bench/results/gpu_target.{json,md} and the check
# cell's kernels in bench/results/gpu_target/ (the reference of tests/test_bench_quick.py's check on a CPU).
bench-gpu: $(STAMP)
	XLA_FLAGS="$${XLA_FLAGS:---xla_gpu_autotune_level=0}" $(PY) bench/gpu_target.py --out bench/results/gpu_run
	cp bench/results/gpu_run/results.json bench/results/gpu_target.json
	cp bench/results/gpu_run/kernels_*.npz bench/results/gpu_target/
	$(PY) bench/gpu_target.py --render bench/results/gpu_target.json > bench/results/gpu_target.md

# The deepbays baseline of bench/cases/deepbays.py, in its own environment (never in .venv): torch's CPU
# build, then deepbays (without its declared torchvision: the benchmark imports only deepbays' kernel and
# theory modules) from PyPI, or from a local source tree: make bench-deepbays DEEPBAYS_SRC=/path/to/deepbays.
# Where PyPI's torch is a CUDA build, point TORCH_PIP_ARGS at torch's CPU wheel index (--index-url ...).
DEEPBAYS_VENV  := bench/.venv-deepbays
DEEPBAYS       ?= deepbays==0.1.11
DEEPBAYS_SRC   ?=
TORCH          ?= torch==2.13.0
TORCH_PIP_ARGS ?=

bench-deepbays:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(DEEPBAYS_VENV)
	$(DEEPBAYS_VENV)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)" numpy scipy
	$(DEEPBAYS_VENV)/bin/python -m pip install --quiet --no-deps --force-reinstall $(if $(DEEPBAYS_SRC),"$(DEEPBAYS_SRC)","$(DEEPBAYS)")
	$(DEEPBAYS_VENV)/bin/python -c "import torch; assert torch.version.cuda is None, 'torch is a CUDA build'; print('deepbays env: torch', torch.__version__)"

clean:
	rm -rf $(VENV) .pytest_cache
