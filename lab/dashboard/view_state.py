"""Each page's view survives a page switch and lives in the URL, so a view can be shared and reloaded.

Streamlit forgets a widget's value once its page is not drawn. A page calls `restore(key, allowed)`
just before drawing a control whose value makes the view; when the session does not hold that value,
it comes back from the URL (a shared link, a reload) or else from what it was when the page was left,
provided `allowed(value)` (a run that is gone, a layer past the last, a number out of range, or a
hand-edited URL never reaches the widget). `app.py` calls `begin()` before the page and `keep()` after
it: the values of the controls the page restored are remembered and written to the URL as JSON, one
parameter per control, and nothing else is.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import streamlit as st

STORE = "_view_state"  # key -> value: the views of every page visited in this session
THIS_RUN = "_view_keys"  # the keys the page drawn in this run restored


def begin() -> None:
    st.session_state[THIS_RUN] = []


def restore(key: str, allowed: Callable[[Any], bool] = lambda value: True) -> None:
    """Give the control `key` its value back, from the URL or from this session's memory, if allowed."""
    st.session_state.setdefault(THIS_RUN, []).append(key)
    if key in st.session_state:
        return
    candidates = []
    if key in st.query_params:
        try:
            candidates.append(json.loads(st.query_params[key]))
        except ValueError:
            pass
    store = st.session_state.get(STORE, {})
    if key in store:
        candidates.append(store[key])
    for value in candidates:
        try:
            ok = allowed(value)
        except (TypeError, ValueError):
            ok = False
        if ok:
            st.session_state[key] = value
            return


def keep() -> None:
    """Remember the values of the controls this run's page restored, and put them in the URL."""
    store = st.session_state.setdefault(STORE, {})
    params = {}
    for key in dict.fromkeys(st.session_state.get(THIS_RUN, [])):
        if key in st.session_state:
            value = st.session_state[key]
            store[key] = value
            params[key] = json.dumps(value, separators=(",", ":"))
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


# Checks for `allowed`, one per kind of control.
def one_of(options) -> Callable[[Any], bool]:
    options = list(options)
    return lambda value: value in options


def some_of(options) -> Callable[[Any], bool]:
    options = list(options)
    return lambda value: isinstance(value, list) and all(v in options for v in value)


def number_in(low: float, high: float, kind: type = float) -> Callable[[Any], bool]:
    return lambda value: (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
                          and (kind is float or float(value).is_integer()))


def flag(value: Any) -> bool:
    return isinstance(value, bool)
