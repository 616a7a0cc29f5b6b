"""Scale-Out: turn a dense decoder into a Mixture of Experts by sparse upcycling.

- `plan`: the options (`UpcyclePlan`), the checks made before any work, the MoE config produced;
- `sparse`: experts copied from the dense MLP, routers drawn at random (Komatsuzaki et al. 2023);
- `granularity`: fine-grained experts as slices of the MLP in virtual groups, and weight scaling
  (He et al. 2024);
- `shared`: N slices of the MLP as one always-on shared expert, the rest routed in virtual groups
  (DeepSeekMoE, Dai et al. 2024; Qwen2-MoE's sigmoid-gated shared expert);
- `drop`: Drop-Upcycling's partial re-initialisation (Nakamura et al. 2025);

The rules know nothing of files: `lab.derive` runs them checkpoint to checkpoint, tensor by tensor
(`upcycle_checkpoint`), or in memory (`upcycle_model`).
"""

from lab.upcycle.plan import (DEFAULT_ROUTER_STD, PAPER_ROUTER_VARIANCE, UpcyclePlan, check_plan,
                              upcycle_config, upcycled_layers)
from lab.upcycle.sparse import UpcycleTensors, router_weight

__all__ = ["DEFAULT_ROUTER_STD", "PAPER_ROUTER_VARIANCE", "UpcyclePlan", "UpcycleTensors", "check_plan",
           "router_weight", "upcycle_config",
           "upcycled_layers"]
