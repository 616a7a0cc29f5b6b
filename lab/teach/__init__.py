"""Small helpers the notebooks need, kept in the library so that notebook cells only call `lab`.

One idea per module:
- `fast`: `fast_mode()` (the `LAB_FAST` switch that shrinks every notebook for CI) and `progress_enabled()`;
- `loop`: a few training steps of an in-memory model on the shipped corpus, with a callback per step;
- `similarity`: cosine similarity of units (MLP neurons, experts), copies of a grown unit, distinct units;
- `layers`: how alike the layers of a trained model are (weights, and the loss when one layer stands in
  for another);
- `heads`: q heads, kv groups, and what happens when a q head reads another group's kv head;
- `experts`: expert load per layer and per domain, measured on the validation windows;
- `display`: plotly's renderer for notebooks (headless and JupyterLab);
- `reference`: the reference runs of `data/runs/`, tolerating their absence;
- `savings_widget`: the paper's Table 6 under ipywidgets sliders.
"""
