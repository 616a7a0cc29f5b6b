"""The opening of each analysis page: what it shows in two or three sentences, its metrics defined with
their units, and the notebooks that explain it (one place, so every page opens the same way)."""

from __future__ import annotations

import streamlit as st

NOTEBOOKS = {
    "01": "notebooks/01_fpi_symmetry.py",
    "02": "notebooks/02_depth_growth.py",
    "03": "notebooks/03_gqa_aki_pro.py",
    "04": "notebooks/04_upcycling_and_routers.py",
    "05": "notebooks/05_compute_savings.py",
    "06": "notebooks/06_efficientscale_end_to_end.py",
}


def intro(what: str, metrics: dict[str, str], notebooks: tuple[str, ...]) -> None:
    """`what` under the title; `metrics` (name -> definition with its unit) in a fold; the notebooks by
    number, with the command that opens them."""
    links = ", ".join(f"`{NOTEBOOKS[n]}`" for n in notebooks)
    st.markdown(f"{what}\n\nExplained in {links} (`make notebooks` opens them in JupyterLab).")
    with st.expander("What the numbers mean"):
        st.markdown("\n".join(f"- **{name}**: {definition}" for name, definition in metrics.items()))
