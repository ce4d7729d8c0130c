# The two commands a newcomer types: `make demo` and `make test`. Both create the project-local
# virtual environment (.venv) on first use and reuse it afterwards.
VENV ?= .venv
PY := $(VENV)/bin/python
export REXTHINKER_CACHE ?= $(CURDIR)/.cache
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env test test-slow demo bench env-info clean

env:
	@bash scripts/install_env.sh

test: env
	$(PY) -m pytest -q

test-slow: env
	$(PY) -m pytest -q -m "slow or not slow"

demo: env
	bash recipes/demo.sh

# GRPO throughput, ours vs TRL's GRPOTrainer on one fixed workload (benchmarks/grpo_vs_trl.py);
# extra flags through BENCH_ARGS, e.g. make bench BENCH_ARGS="--steps 5 --note 'quiet machine'".
# The other benchmarks (reward, metric, data throughput) run on their own: python benchmarks/<name>.py
bench: env
	$(PY) benchmarks/grpo_vs_trl.py $(BENCH_ARGS)

env-info: env
	$(PY) -m rexthinker.env

clean:
	rm -rf outputs .cache .pytest_cache
