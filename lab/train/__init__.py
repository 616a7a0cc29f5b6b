"""Training: recipes, the loop, evaluation, checkpoints with their training state, and metrics.

`load_recipe(path_or_dict)` validates a recipe (`lab.train.recipe` documents the schema);
`train(recipe, out_dir, max_steps=, resume=, init_from=, progress=)` runs it (`lab.train.loop`).
The run directory's layout is in `lab.train.state`, the metrics schema in `lab.train.metrics`.
"""

from lab.train.loop import train
from lab.train.recipe import Recipe, load_recipe
from lab.train.signals import TrainingStopped

__all__ = ["Recipe", "TrainingStopped", "load_recipe", "train"]
