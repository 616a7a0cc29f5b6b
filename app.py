"""The EfficientScale Lab dashboard: `make lab`, or `streamlit run app.py -- --runs DIR`.

Navigation only: the sidebar (runs directory, uploads) and the pages, each a file in lab/dashboard/
(plus one setting for the server's torch threads, lab/dashboard/cache.py, and each page's view kept
across page switches and in the URL, lab/dashboard/view_state.py).
"""

import sys
from pathlib import Path

import streamlit as st

import lab.dashboard
from lab.dashboard import cache, sources, view_state

# The pages by absolute path: the same files whether this script runs from a checkout or an installed wheel.
PAGES = Path(lab.dashboard.__file__).resolve().parent

st.set_page_config(page_title="EfficientScale Lab", page_icon=":material/stacked_line_chart:", layout="wide")
cache.configure_torch()
sources.sidebar(default_dir=sources.runs_dir_argument(sys.argv[1:]))
page = st.navigation([
    st.Page(PAGES / "overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page(PAGES / "loss_curves.py", title="Loss curves", icon=":material/show_chart:", url_path="loss"),
    st.Page(PAGES / "expert_load.py", title="Expert load", icon=":material/grid_view:", url_path="experts"),
    st.Page(PAGES / "compute_savings.py", title="Compute savings", icon=":material/savings:", url_path="savings"),
    st.Page(PAGES / "run_details.py", title="Run details", icon=":material/article:", url_path="details"),
    st.Page(PAGES / "growth_explorer.py", title="Growth explorer", icon=":material/park:", url_path="growth"),
    st.Page(PAGES / "live_run.py", title="Live run", icon=":material/play_circle:", url_path="live"),
])
view_state.begin()
page.run()
view_state.keep()  # the page's controls: remembered for when it is shown again, and in the URL
