# The two commands a new user runs: `make lab` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test bench tiny table1 data compat4 help clean notebooks pipeline runs corpus sources experiments

help:
	@echo "make lab    install into .venv and open the dashboard on http://127.0.0.1:8501 (RUNS=DIR for other runs)"
	@echo "make test   install into .venv and run the whole test suite"
	@echo "make bench  every benchmark (model vs transformers, dispatch, training, growth, upcycle) into bench/results.{json,md}"
	@echo "make notebooks  build the notebooks (.ipynb from notebooks/*.py) and open JupyterLab"
	@echo "make pipeline   the tiny EfficientScale pipeline and its baseline into runs/efficientscale-tiny"
	@echo "make runs       regenerate the reference runs in data/runs"
	@echo "make tiny   train the tiny recipe into runs/tiny (about a minute on 2 CPU cores)"
	@echo "make table1 the paper's Table 1 (growth methods) at toy scale into runs/growth_table1"
	@echo "make corpus the big training corpus (27M tokens) into data/tokens, checked against data/corpus-manifest.json"
	@echo "make sources  pretrain (or resume) the sources on data/tokens and export them to data/sources (hours)"
	@echo "make experiments  the seeded experiments (3 seeds, and 3 more from seed 1000), data/claims.json (many hours; resumable)"
	@echo "make data   rebuild the corpus and tokenizer and check they equal the committed ones"
	@echo "make compat4  checkpoints across transformers 4.x and 5.x"

# Reinstall whenever requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	@echo "installing the lab's packages into $(VENV) (once; 94 s measured on a fresh clone on 2 cores, longer on a slow network)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Streamlit reads .streamlit/config.toml from the working directory: start it from the repo root.
RUNS ?= data/runs
lab: $(STAMP)
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 -- --runs $(RUNS)

test: $(STAMP)
	$(PY) -m pytest -q -n auto

bench: $(STAMP)
	$(PY) -m lab bench all --out bench

notebooks: $(STAMP)
	$(PY) -m lab notebooks
	$(VENV)/bin/jupyter lab notebooks/

tiny: $(STAMP)
	$(PY) -m lab train --recipe recipes/tiny.yaml --out runs/tiny

table1: $(STAMP)
	$(PY) -m lab.experiments.growth_table1 --out runs/growth_table1 --steps 100

corpus: $(STAMP)
	$(PY) -m lab data build --out data/tokens --force --check data/corpus-manifest.json

# Each source trains for about 2 hours on 2 CPU cores; run it again after an interruption to resume.
# The names of lab.sources.SOURCE_NAMES.
SOURCES := source-deep source-shallow
sources: $(STAMP)
	test -f data/tokens/manifest.json || $(MAKE) corpus
	for name in $(SOURCES); do \
	  out=runs/sources/$$name; \
	  if [ ! -d $$out/final ]; then \
	    if [ -d $$out/checkpoints ]; then resume=--resume; else resume=; rm -rf $$out; fi; \
	    $(PY) -m lab train --recipe recipes/$$name.yaml --out $$out $$resume || exit 1; \
	  fi; \
	  $(PY) -m lab sources export $$out --out data/sources/$$name --recipe recipes/$$name.yaml --force || exit 1; \
	done

# The seeded experiments over seeds 0-2 from data/sources/source-deep, exported without weights to
# data/runs/experiments, judged into data/claims.json; then seeds 1000-1002 into data/claims-seed-1000.json,
# the check that other seeds give no claim the opposite verdict. Run it again after an interruption; on a
# machine without runs/experiments it starts from the committed exports (measured seeds are skipped, a
# seed exported half-way runs only what it lacks).
EXPERIMENTS := table2 upcycle table1 pipeline balance msg llama_pro
experiments: $(STAMP)
	test -f data/sources/source-deep/config.json || $(MAKE) sources
	for base in 0 1000; do \
	  for name in $(EXPERIMENTS); do \
	    out=runs/experiments/seed-$$base/$$name; light=data/runs/experiments/seed-$$base/$$name; \
	    if [ ! -d $$out ] && [ -d $$light ]; then mkdir -p $$(dirname $$out) && cp -r $$light $$out; fi; \
	    $(PY) -m lab experiments run $$name --seeds 3 --seed-base $$base --out $$out || exit 1; \
	    $(PY) -m lab experiments export $$out $$light || exit 1; \
	  done; \
	done
	$(PY) -m lab experiments claims $(addprefix data/runs/experiments/seed-0/,$(EXPERIMENTS)) --json data/claims.json --markdown data/claims.md
	$(PY) -m lab experiments claims $(addprefix data/runs/experiments/seed-1000/,$(EXPERIMENTS)) --json data/claims-seed-1000.json

data: $(STAMP)
	$(PY) data/build_corpus.py --check

clean:
	rm -rf $(VENV) .pytest_cache

# Cross-version check: the lab's checkpoints in transformers 4.x, and 4.x checkpoints in the lab.
compat4: $(STAMP)
	test -x .venv-transformers4/bin/python || $(PYTHON) -m venv .venv-transformers4
	.venv-transformers4/bin/python -m pip install --quiet torch==2.13.0 "transformers>=4.46,<5" safetensors numpy
	rm -rf .compat4 && mkdir .compat4
	$(PY) tests/compat/transformers4.py write-lab .compat4
	.venv-transformers4/bin/python tests/compat/transformers4.py check-in-hf .compat4
	$(PY) tests/compat/transformers4.py check-in-lab .compat4
	rm -rf .compat4
