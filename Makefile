# The two commands a new user runs: `make lab` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test bench help clean

help:
	@echo "make lab    install into .venv and show the lab's commands"
	@echo "make test   install into .venv and run the whole test suite"
	@echo "make bench  our model against transformers' (forward+backward, CPU)"

# Reinstall whenever requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lab: $(STAMP)
	$(PY) -m lab --help

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m lab bench model

clean:
	rm -rf $(VENV) .pytest_cache
