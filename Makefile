# The two commands a newcomer types: `make demo` and `make test`. Both create the project-local
# virtual environment (.venv) on first use and reuse it afterwards.
VENV ?= .venv
PY := $(VENV)/bin/python
export REXTHINKER_CACHE ?= $(CURDIR)/.cache
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env test test-slow demo env-info clean

env:
	@bash scripts/install_env.sh

test: env
	$(PY) -m pytest -q

test-slow: env
	$(PY) -m pytest -q -m "slow or not slow"

demo: env
	bash recipes/demo.sh

env-info: env
	$(PY) -m rexthinker.env

clean:
	rm -rf outputs .cache .pytest_cache
