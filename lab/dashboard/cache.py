"""Process-wide caches of what pages compute once: the encoded corpus, source models, demo MoEs.

`st.cache_resource` shares one object between every session (read-only use: models are run under
`torch.no_grad` in eval mode and never trained after they are built). Entries are bounded.
"""

from __future__ import annotations

import streamlit as st
import torch

from lab.config import ModelConfig
from lab.dashboard import explorer


def configure_torch() -> None:
    """One intra-op thread for the server's computations (called by app.py on every run; cheap).

    The dashboard's models are tiny: a second thread gains nothing, and on a busy machine two threads
    contending for cores are several times slower than one (the explorer's 20-step source model:
    1.9 s with one thread, 8.9 s with two, on a shared 2-core machine). Trainings started from the
    Live run page are separate processes with their own threads.
    """
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@st.cache_resource(show_spinner="encoding the corpus...")
def corpus_tokens(split: str) -> dict[str, torch.Tensor]:
    from lab.data import load_tokens

    return load_tokens(split)


@st.cache_resource(show_spinner=False)
def windows() -> dict[str, torch.Tensor]:
    return explorer.validation_windows(corpus_tokens("validation"))


def window_batch() -> torch.Tensor:
    """Every domain's validation windows stacked: the tokens models are compared on."""
    return torch.cat(list(windows().values()))


@st.cache_resource(max_entries=4, show_spinner="building the source model...")
def source_model(cfg: ModelConfig, train_steps: int, seed: int):
    tokens = corpus_tokens("train") if train_steps else None
    return explorer.build_source(cfg, train_steps=train_steps, seed=seed, train_tokens=tokens)


@st.cache_resource(max_entries=2, show_spinner="loading the pretrained source...")
def shipped_source(name: str):
    return explorer.shipped_source(name)

