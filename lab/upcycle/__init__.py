"""Scale-Out: turn a dense decoder into a Mixture of Experts by sparse upcycling.

- `plan`: the options (`UpcyclePlan`), the checks made before any work, the MoE config produced;
- `sparse`: experts copied from the dense MLP, routers drawn at random (Komatsuzaki et al. 2023);
- `granularity`: fine-grained experts as slices of the MLP in virtual groups, and weight scaling
  (He et al. 2024);
- `drop`: Drop-Upcycling's partial re-initialisation (Nakamura et al. 2025);
- `stream`: the checkpoint-to-checkpoint transform, tensor by tensor, and the in-memory one.
"""

from lab.upcycle.plan import (DEFAULT_ROUTER_STD, PAPER_ROUTER_VARIANCE, UpcyclePlan, check_plan,
                              output_model_type, upcycle_config, upcycled_layers)
from lab.upcycle.sparse import UpcycleTensors, router_weight
from lab.upcycle.stream import upcycle_checkpoint, upcycle_model

__all__ = ["DEFAULT_ROUTER_STD", "PAPER_ROUTER_VARIANCE", "UpcyclePlan", "UpcycleTensors", "check_plan",
           "output_model_type", "router_weight", "upcycle_checkpoint", "upcycle_config", "upcycle_model",
           "upcycled_layers"]
