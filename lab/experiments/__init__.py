"""Experiments that reproduce the papers' tables at toy scale; each module runs as `python -m lab.experiments.NAME`."""
