"""The Streamlit dashboard: loss curves, expert load, compute savings and the growth explorer.

`app.py` (at the repository root) only navigates; each page is one file here, run by Streamlit as a
script (`if __name__ == "__main__": render()`), so importing a page does nothing. Pages read runs
through `sources` (runs directory, uploads, caching by file size and modification time) and draw
with the builders of `lab.plots`, the same ones the notebooks use. What a page computes live
(growing a model, measuring per-domain expert load, savings from a run's records) lives in plain
functions in `explorer` and `measured`, testable without a browser.
"""
