"""Plotly figure builders shared by the notebooks and the dashboard.

Each module builds figures for one idea and returns `plotly.graph_objects.Figure`s; callers import
the module they need (`from lab.plots.curves import loss_figure`). Builders take data (runs from
`lab.runs`, tensors, tables) and never read files or train.
"""
