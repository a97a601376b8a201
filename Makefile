# Two commands do all set-up: `make demo` and `make test` (each creates .venv on first use).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv data clean-venv

$(STAMP): requirements.txt requirements-sdist.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation --no-deps -r requirements-sdist.txt 2>&1 | \
		{ grep -v "^WARNING: Location .* is ignored" || true; }
	@touch $(STAMP)

venv: $(STAMP)

# Generate the embedded synthetic dataset (also happens automatically on first use).
data: $(STAMP)
	@test -d datasets/echo_synth/cardiacUDC_dataset && echo "datasets/echo_synth already exists" || \
		$(PY) tools/make_echo_synth.py --root datasets/echo_synth

# The main job: train + evaluate LGRNet (CPU-tiny) on the embedded data, then print the results table.
# DEMO_ARGS shortens the config's recipe so that a fresh clone finishes in about 7 minutes on 2 cores.
DEMO_CONFIG ?= configs/cardiac/lgrnet_tiny.py
DEMO_ITERS ?= 280
DEMO_ARGS ?= train.max_iter=$(DEMO_ITERS) train.eval_period=0 train.checkpoint_period=$(DEMO_ITERS)
demo: $(STAMP)
	$(PY) main.py --config_file $(DEMO_CONFIG) --trainer_mode train_attmpt \
		--output_dir output/demo --start_over $(DEMO_ARGS)
	$(PY) main.py --trainer_mode eval --eval_path output/demo/checkpoints/model_final.pth
	$(PY) tools/results_table.py output/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
