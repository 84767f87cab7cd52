# The few commands people type. Each one installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline-friendly, quiet tools; DVC's site cache stays inside the project.
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR := $(CURDIR)/.scratch/dvc-site-cache
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install compiler nginx postgresql chromium run colour studio web serve serve-stop registry registry-stop test test-fast pipeline-yaml bench clean

install: $(STAMP)  ## create .venv with the locked stack (a no-op when up to date)

$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	bash scripts/install-weights
	touch $@

compiler:  ## a C++ compiler for torch.compile on the CPU (apt-get install g++ when root and missing)
	bash scripts/install-compiler

nginx:  ## Debian's nginx in .tools/nginx (no root; pinned .deb, sha256 checked); a no-op when present
	bash scripts/install-nginx

postgresql:  ## Debian's PostgreSQL server binaries (apt-get install postgresql when root and missing); prints their dir
	bash scripts/install-postgresql

chromium:  ## Debian's Chromium and chromedriver for the studio page's browser test (apt-get install when root and missing)
	bash scripts/install-chromium

run: install compiler  ## the main job: dvc repro (ingest ... train, evaluate, quantize, register, promote) on Fashion-MNIST, then a summary
	dvc repro
	@productstudio summary

# Generation on colour catalogue photos (clothing-dataset-small at 64 px RGB) with configs/clothing-64.yaml, into
# runs/clothing-64/: the same steps as the main job, registered as product-studio-clothing-64.
colour: install  ## the generation steps on colour photos at 64 px (configs/clothing-64.yaml) into runs/clothing-64
	bash scripts/run-params configs/clothing-64.yaml runs/clothing-64

# Editing: the clothing test photos -> marketplace exports (reports/edit/studio: <preset>/ folders, report.json,
# index.html), and the cut-outs measured on the labelled set (reports/edit/evaluate). Stages of dvc.yaml.
studio: install  ## studio exports of ../shared/data/clothing-dataset-small/test with a report and a contact sheet
	dvc repro edit_studio edit_evaluate
	@echo "contact sheet: reports/edit/studio/index.html; cut-out quality: reports/edit/evaluate/metrics.json"

# The studio page for merchants on 127.0.0.1:8075 (productstudio web): generate, edit and export images, see the
# registry and the canary. Starts the generator's and the edit task's TorchServe when they are not running.
web: install  ## the studio page (after 'make run'): prints its URL with the access token; Ctrl-C stops it
	productstudio web $(WEB_FLAGS)

# A live local endpoint: the registry's champion (or, with no champion yet, the main job's generator)
# packaged and served by TorchServe on 127.0.0.1:8085; prints the URL, the key file and a curl example.
serve: install  ## package the champion (else models/train/generator) and start TorchServe
	productstudio serve stop >/dev/null
	productstudio package || { echo "-> serving models/train/generator instead"; \
		productstudio package --generator models/train/generator; }
	productstudio serve start

serve-stop:  ## stop what 'make serve' started
	productstudio serve stop

# A team registry: MLflow's server on PostgreSQL with artifacts in S3 (a local stand-in unless
# REGISTRY_FLAGS='--artifacts-destination s3://bucket/prefix'), on 127.0.0.1:5000; prints what to export.
registry: install postgresql  ## start the team MLflow server (PostgreSQL + S3) on 127.0.0.1:5000
	productstudio registry start $(REGISTRY_FLAGS)

registry-stop:  ## stop what 'make registry' started
	productstudio registry stop

test: install compiler nginx postgresql chromium  ## the whole suite, slow end-to-end tests included
	bash scripts/pytest-strict tests --durations=25

test-fast: install  ## the unit tests (tests/unit): no services, a few minutes
	bash scripts/pytest-strict tests/unit

pipeline-yaml: install  ## recompile pipelines/product_studio.yaml after changing components
	python -m pipelines.product_studio compile
	python -m pipelines.product_studio compile --train-on trainjob
	python -m pipelines.studio compile
	python -m pipelines.editors compile

bench: install  ## benchmarks: print tables, write bench/results/*.json
	python bench/bench_load.py
	python bench/bench_train.py
	python bench/bench_inception.py
	python bench/bench_quantize.py
	python bench/bench_serving.py
	python bench/bench_serving_edit.py
	python bench/bench_style.py
	python bench/bench_watermark.py
	test -d models/detector || dvc repro edit_detector
	python bench/bench_dust_fill.py

clean:
	rm -rf data reports .scratch .dvc-remote
