# make demo: build .venv, then run every step on the embedded dataset (offline), ending with the explorer page.
# make test: build .venv with the test tools, then run the test suite (one worker a core; TEST_WORKERS= runs it in one process).
# make test-fast: the same without the tests marked slow (shared trainings, subprocesses, torchrun, notebook, fuzz).
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
OUT ?= output/demo

.PHONY: venv demo test test-fast clean
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) train.py --latent_size 16 --dataset digits --num_epochs 30 --output_dir $(OUT) --overwrite
	$(PY) viz_reconstruction.py --output_dir $(OUT)
	$(PY) encode_latent_space.py --output_dir $(OUT)
	$(PY) viz_latent_space.py --output_dir $(OUT)
	$(PY) viz_kmeans_latent_space.py --output_dir $(OUT)
	$(PY) classify_latent_space.py --output_dir $(OUT)
	$(PY) diagnose_latent_space.py --output_dir $(OUT)
	$(PY) viz_generation.py --output_dir $(OUT)
	$(PY) explore_latent_space.py --output_dir $(OUT)
	@echo "the demo wrote, in $(OUT)/:"
	@echo "figures (and $$(ls $(OUT)/*_epoch_*.png 2>/dev/null | wc -l) per-epoch snapshots, reconstructions_*_epoch_NNN.png):"
	@cd $(OUT) && ls *.png | grep -v _epoch_ | fmt -w 110 | sed 's/^/  /'
	@echo "animations:"; cd $(OUT) && ls *.gif *.mp4 2>/dev/null | fmt -w 110 | sed 's/^/  /'
	@echo "page (open it in a browser):"; cd $(OUT) && ls *.html | sed 's/^/  /'
	@echo "numbers:"; cd $(OUT) && ls *.json | fmt -w 110 | sed 's/^/  /'

# the tests in one worker process a core (pytest-xdist, at most 4), each worker's torch on its share of the cores
TEST_WORKERS ?= -n auto --maxprocesses 4

test: venv
	$(PY) -m pytest -q $(TEST_WORKERS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow" $(TEST_WORKERS)

clean:
	rm -rf $(VENV) output/demo
