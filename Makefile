# The two commands: `make report` renders the report, `make test` runs the tests.
# Both create .venv and install the pinned dependencies on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
# the cpu report is the project's front page (reports/); every other profile renders under reports/<profile>
REPORT_DIR ?= $(if $(filter cpu,$(PROFILE)),reports,reports/$(PROFILE))
# PROFILE=davis: a DAVIS root (JPEGImages/ + Annotations/); default the four sample sequences beside the project
DAVIS ?=

.PHONY: install report index screenshot test browser test-fast lab bench bench-tokenizer bench-mfu bench-rate bench-lr bench-convergence bench-study-budget bench-predict bench-compile bench-mv bench-loader still-input check-lab clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -c "from vpe_lib.report.build import ensure_kernel; ensure_kernel()"  # the kernel vpe report uses (quiet log)
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/vpe report --profile $(PROFILE) --run-dir $(RUN_DIR) --out $(REPORT_DIR) $(if $(FORCE),--force $(FORCE)) \
	  $(if $(DAVIS),--set data.source=davis:$(abspath $(DAVIS)))

# The index again from REPORT_DIR/summary.json with this code (no notebook runs): the index is a view of the summary
index: $(STAMP)
	$(BIN)/vpe report --profile $(PROFILE) --out $(REPORT_DIR) --index-only

# The index's first screen at 1280x800 in headless Chromium (fails if the answers or the forest plot are below it)
screenshot: $(STAMP)
	$(BIN)/python -m vpe_lib.report.browser_check $(REPORT_DIR)/index.html --screenshot $(REPORT_DIR)/first_screen.png

# Chromium for the browser test of the report pages (tests/test_report_browser.py skips without it):
# Debian's package, installed where we may (root with apt-get); elsewhere say how.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the browser test ..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser test will skip"; \
	  else echo "chromium not found: the browser test will skip (Debian/Ubuntu: sudo apt-get install chromium)"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/bench_pushworld.py

# Our tokenizer vs magvit2-pytorch's VideoTokenizer. magvit2-pytorch needs torchvision, which the
# project's environment must not get, so the benchmark has its own: torch + torchvision (from this
# machine's disk), magvit2-pytorch, and the project without its dependencies plus those it imports.
# ~11 minutes on 2 CPU cores; pass flags with BENCH_ARGS, e.g. make bench-tokenizer BENCH_ARGS=--quick
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS ?=

$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BENCH_BIN)/python -m pip install --quiet magvit2-pytorch==0.5.1 einops==0.8.2 vector-quantize-pytorch==1.32.0 \
		numpy==2.4.6 tqdm==4.70.1 av==18.1.0 pillow==12.2.0 h5py==3.16.0
	$(BENCH_BIN)/python -m pip install --quiet --no-deps -e .
	$(BENCH_BIN)/python -W ignore -c "import vpe_lib, magvit2_pytorch, torchvision"
	touch $(BENCH_STAMP)

bench-tokenizer: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/bench_tokenizer.py $(BENCH_ARGS)

# Training throughput and model FLOP utilisation of the BAIR-preset tokenizer (bf16 on a GPU);
# Prediction transformers: training / sampling clips/s, memory, MFU on a GPU; codec motion vectors
# against block matching (ms per frame, one run). e.g. make bench-predict BENCH_ARGS="--profile gpu --amp bf16"
bench-predict: $(STAMP)
	$(BIN)/python bench/bench_predictors.py $(BENCH_ARGS)

# torch.compile against eager per model of a profile (compile time, speed-up, break-even);
# e.g. make bench-compile BENCH_ARGS="--profile gpu --device cuda --amp bf16"
bench-compile: $(STAMP)
	$(BIN)/python bench/bench_compile.py $(BENCH_ARGS)

bench-mv: $(STAMP)
	$(BIN)/python bench/bench_motion_vectors.py $(BENCH_ARGS)

# Clips/s the pretraining batches arrive at: in the training thread vs a DataLoader with 0 / 1 / 2 workers
# (16x64x64 clips of a small generated PushWorld set), against what the cpu profile's tokenizer training
# step consumes. e.g. make bench-loader BENCH_ARGS="--data runs/cpu/data/pushworld --workers 0,2,4 --batch 64"
bench-loader: $(STAMP)
	$(BIN)/python bench/bench_loader.py $(BENCH_ARGS)

# e.g. make bench-mfu BENCH_ARGS="--batch 32 --compile"
bench-mfu: $(STAMP)
	$(BIN)/python bench/bench_tokenizer_mfu.py $(BENCH_ARGS)

# Held-out PSNR vs bits per pixel of the profile's tokenizer at several token grids, beside JPEG;
# needs the run's data stage (make report, or the 01_data notebook). e.g. BENCH_ARGS="--steps 300"
bench-rate: $(STAMP)
	$(BIN)/python bench/tokenizer_rate_sweep.py --profile $(PROFILE) --run-dir $(RUN_DIR) $(BENCH_ARGS)

# The tokenizer's learning rate re-checked on the segmentation study's validation videos (never the
# test split); needs the run's data stage. e.g. BENCH_ARGS="--lrs 2.5e-4,5e-4,1e-3 --steps 300"
bench-lr: $(STAMP)
	$(BIN)/python bench/tokenizer_lr_validation.py --profile $(PROFILE) --run-dir $(RUN_DIR) $(BENCH_ARGS)

# The segmentation study's convergence check on a run with only the data and the tokenizer (the study
# profile's recipe; runs/cpu has it): the UNet and the fine-tuned tokenizer pair at 100% labels for the
# grid's 480 updates and for 1920 (~1.5 h on 2 cores). e.g. BENCH_ARGS="--methods unet --steps 480,960"
bench-convergence: $(STAMP)
	$(BIN)/python bench/seg_convergence.py --run-dir $(RUN_DIR) $(BENCH_ARGS)

# Where a rendered study's minutes went, run by run, and its idle-host estimate (reads runs/study; trains nothing)
bench-study-budget: $(STAMP)
	$(BIN)/python bench/study_budget.py --run-dir $(RUN_DIR) --json bench/results/study_budget.json

# The explorers notebook in a real JupyterLab in headless Chromium: run all, move a slider, screenshot
check-lab: $(STAMP)
	$(BIN)/python -m vpe_lib.report.lab_check --screenshot bench/results/lab_check.png --json bench/results/lab_check.json
	$(BIN)/python -m vpe_lib.report.lab_check --notebook notebooks/explore_predictions.ipynb \
		--screenshot bench/results/lab_check_predictions.png --json bench/results/lab_check_predictions.json

# A causal tokenizer, a still image repeated to a clip vs encoded alone, paired by seed (~25 min, cpu)
still-input: $(STAMP)
	$(BIN)/python -m vpe_lib.experiments.still_input --profile $(PROFILE) --run-dir runs/still_input --out reports/still_input

clean:
	rm -rf $(VENV) runs .pytest_cache
