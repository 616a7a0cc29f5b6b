"""Scale-Up: grow a small dense decoder into a bigger one (AquilaMoE 2.2.1; bert2BERT; Net2Net).

- `maps`: which old unit each new unit copies (cyclic, bert2BERT's random map, grouped for GQA);
- `width`: FPI (copy out-units, split in-units) and AKI (new out-units from layer l + 1);
- `depth`: layer orders by stacking, interpolation, identity blocks;
- `noise`: symmetric noise, function-preserving and symmetry-breaking;
- `plan`: the options (`GrowthPlan`), the target config and the checks made before any work;
- `transform`: every output tensor from the source tensors it needs;
- `msg`, `masks`: masked structural growth (Yao et al. 2024): new units behind masks that ramp from 0 to 1,
  exact at 0 whatever the new weights, folded into the weights at 1;

The rules know nothing of files: `lab.derive` runs them checkpoint to checkpoint, tensor by tensor
(`grow_checkpoint`), or in memory (`grow_model`).

AKI-Pro (the paper's method) = AKI width + interpolation depth + the GQA rule (kv groups kept, q heads
grow inside each group).
"""

from lab.growth.depth import DEPTH_KINDS, PLACEMENTS, inserted_copies, layer_order
from lab.growth.maps import MAP_KINDS, GrowthMap, grouped_map, growth_map
from lab.growth.noise import symmetric_noise
from lab.growth.plan import METHODS, GrowthPlan, half_again_deeper, plan_growth
from lab.growth.transform import GrowthTensors, growth_maps
from lab.growth.width import aki_out, fpi_in, fpi_out

__all__ = ["DEPTH_KINDS", "GrowthMap", "GrowthPlan", "GrowthTensors", "MAP_KINDS", "METHODS", "PLACEMENTS", "aki_out", "fpi_in",
           "fpi_out", "grouped_map", "growth_map",
           "growth_maps", "half_again_deeper", "inserted_copies", "layer_order", "plan_growth", "symmetric_noise"]
