import os
import sys

import torch

# Tests compare numbers, not speed: keep them deterministic and light on a 2-core machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))
sys.path.insert(0, os.path.dirname(__file__))
