# The two commands: `make book` and `make test` (both set up .venv first).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NBVAL_DIR := _build/nbval
JB_FLAGS := -n -W --keep-going
# Notebooks executed by the build and the tests skip interactive widgets (see ch05).
export COMPANION_HEADLESS := 1

.PHONY: help venv book html pdf test test-package lint lint-chapters format-chapter nbval \
	chapter bench experiments screenshots readers-map clean

help:
	@echo "make book    set up .venv and build the HTML book, every notebook executed"
	@echo "make test    set up .venv; ruff, package tests, nbval over every chapter, HTML build"
	@echo "make pdf     the whole book as one PDF, proofs and solutions expanded (needs LaTeX)"
	@echo "make chapter CH=book/part1/ch01_min_norm.md   run one chapter under nbval"
	@echo "make bench   run the performance suite (benchmarks/), not part of make test"
	@echo "make experiments   run/resume Part IV's stored sweeps (experiments/); JOBS=2, SCALE=paper, NAMES=..."

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is not None)" \
	  || { echo "torchvision must not be installed (it breaks beside the torch CPU wheel)"; exit 1; }
	touch $@

venv: $(STAMP)

# -W: warnings are errors; a failing cell raises (nb_execution_raise_on_error in _config.yml).
html: venv
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@test -f _build/html/index.html

book: html
	@echo "Built _build/html/index.html"

lint: venv
	$(BIN)/ruff check src tests benchmarks tools book/_ext

# The chapters' code cells, converted with jupytext and checked by ruff at line length 88
# (tools/ruff_chapters.toml); findings are reported at their line of the .md source.
lint-chapters: venv
	$(BIN)/python tools/lint_chapters.py

# Format one chapter's code cells in place with ruff (line length 88), through jupytext.
format-chapter: venv
	@test -n "$(CH)" || { echo "usage: make format-chapter CH=book/partN/chNN_name.md"; exit 2; }
	$(BIN)/jupytext --quiet --pipe "$(BIN)/ruff format --config tools/ruff_chapters.toml {}" $(CH)

# pytest exits 5 when it collects nothing; make treats every non-zero exit as failure.
# The docstrings' Examples sections run too (--doctest-modules over the package).
test-package: venv
	$(BIN)/pytest tests src/companion --doctest-modules -q

nbval: venv
	rm -rf $(NBVAL_DIR)
	$(BIN)/python tests/notebooks.py prepare $(NBVAL_DIR)
	cd $(NBVAL_DIR) && ../../$(BIN)/pytest --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=300 -p no:cacheprovider -o addopts="" --rootdir=. \
	  --junitxml=report.xml -o junit_family=xunit1 -q .
	$(BIN)/python tests/notebooks.py check $(NBVAL_DIR)/report.xml $(NBVAL_DIR)

test: lint lint-chapters test-package nbval html

chapter: venv
	@test -n "$(CH)" || { echo "usage: make chapter CH=book/partN/chNN_name.md"; exit 2; }
	mkdir -p _build/chapter
	$(BIN)/jupytext --quiet --to notebook --output _build/chapter/$$(basename $(CH) .md).ipynb $(CH)
	cd _build/chapter && ../../$(BIN)/pytest --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=300 -p no:cacheprovider -o addopts="" --rootdir=. -q \
	  --durations=5 $$(basename $(CH) .md).ipynb

JOBS ?= 1
SCALE ?= book
# Part IV's heavy sweeps, stored with provenance in experiments/results/ (resumable: rerun to
# continue; NAMES="ch12_gd ch14_edge" runs some; SCHEDULER=tcp://host:8786 uses a Dask
# cluster). Not part of `make test`, which checks that the stored results are fresh and
# complete (tests/test_experiments.py).
experiments: venv
	nice -n 10 $(BIN)/python experiments/run.py $(NAMES) --jobs $(JOBS) --scale $(SCALE) \
	  $(if $(SCHEDULER),--scheduler $(SCHEDULER),)

bench: venv
	$(BIN)/python benchmarks/run_all.py

# The whole book as one PDF (_build/latex/book.pdf, about 400 pages), built by XeLaTeX from
# the same executed notebooks (the execution cache of `make book` is reused). Proofs and
# exercise solutions are printed in full: dropdowns exist only in HTML. Not part of `make
# test` (the HTML build is the check). Needs xelatex and latexmk, e.g. on Debian
# apt-get install texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
#   texlive-xetex latexmk fonts-freefont-otf tex-gyre texlive-plain-generic
pdf: venv
	@command -v xelatex >/dev/null && command -v latexmk >/dev/null || { \
	  echo "make pdf needs a LaTeX toolchain (xelatex, latexmk): see README.md"; exit 2; }
	$(BIN)/jupyter-book build . --builder pdflatex -n --keep-going
	@ls -l _build/latex/book.pdf

# Screenshots of built pages in headless Chromium (tools/screenshots.py --help).
screenshots:
	$(BIN)/python tools/screenshots.py $(PAGES)

# Redraw book/_static/readers_map.svg from the dependency list in tools/readers_map.py.
readers-map: venv
	$(BIN)/python tools/readers_map.py

clean:
	rm -rf _build
