# The two set-up commands: `make demo` (the main job) and `make test`.
# Each creates .venv/ in the checkout on first use and installs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ATTN2D := $(VENV)/bin/attn2d
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
MECHANISMS := none,se,eca,cbam,nonlocal,danet,criss-cross

.PHONY: demo test lint gallery fashion-mnist slurm

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST offline from Debian's package when apt-get is there; else torchvision downloads.
fashion-mnist:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi

# The main job: compare mechanisms on Fashion-MNIST with the small CNN (a few minutes on 2 cores).
demo: $(STAMP) fashion-mnist
	$(ATTN2D) list
	$(ATTN2D) compare --dataset fashion-mnist --model small_cnn --attention $(MECHANISMS) \
	  --subset 3000 --epochs 2 --batch-size 64 --seeds 1 --jobs 2 \
	  --no-progress --out runs/demo-fmnist $$([ -d $(FASHION_MNIST) ] || echo --download)
	@echo "Table, plots and results.html: runs/demo-fmnist/. The full run (60,000 images, 3 seeds):"
	@echo "  $(ATTN2D) compare --dataset fashion-mnist --model small_cnn --attention $(MECHANISMS) --seeds 3 --epochs 5 --jobs 2 --out runs/full-fmnist"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# A real one-node SLURM with accounting for the SLURM tests, when run as root with apt-get
# (scripts/local-slurm.sh installs and starts it; idempotent). Elsewhere those tests skip.
slurm:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then scripts/local-slurm.sh; \
	  else echo "make: no local SLURM (needs root and apt-get); the SLURM tests skip"; fi

test: lint slurm
	$(PY) -m pytest -q -n 2

# The README's gallery: two short runs, then the pictures.
gallery: $(STAMP) fashion-mnist
	$(ATTN2D) train --model small_cnn --attention cbam --dataset fashion-mnist --subset 4000 \
	  --test-subset 1000 --epochs 4 --batch-size 64 --out runs/gallery-cbam
	$(ATTN2D) train --model small_cnn --attention rcca --dataset fashion-mnist --subset 4000 \
	  --test-subset 1000 --epochs 4 --batch-size 64 --out runs/gallery-rcca
	$(ATTN2D) visualize --checkpoint runs/gallery-cbam/last.pt --index 7 --layers block2.attn \
	  --pictures spatial top-channels histograms curves --prefix cbam --out docs/gallery
	$(ATTN2D) visualize --checkpoint runs/gallery-rcca/last.pt --index 7 --layers attn.block1 \
	  --pictures query --prefix rcca --out docs/gallery
