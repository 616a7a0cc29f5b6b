"""The numbers of the AquilaMoE paper (arXiv 2408.06567) that the lab compares itself with, typed once.

Every lesson, experiment, page and command that quotes the paper reads its number from here.
"""

from __future__ import annotations

from lab.flops import Phase

# Table 1: validation loss of M(24, 2048) (2.97) grown to M(32, 4096), right after growth.
TABLE1_LOSS = {"source": 2.97, "fpi-width": 2.97, "fpi-stack": 4.30, "fpi-interpolate": 3.31, "aki-stack": 9.56,
               "aki-pro": 7.81, "random": 12.22}

# Table 2: AquilaDense-7B M(32, 4096) grown by FPI, right after growth: an integer width ratio (x2) keeps
# the loss, a non-integer one (M(32, 5120)) raises it, and depth on top (M(40, 5120)) raises it more.
TABLE2_LOSS = {"source": 1.85, "width-integer": 1.85, "width-noninteger": 1.96, "width-depth": 2.24,
               "aki-pro": 7.90}

# Table 3: peak learning rates of the stages; later stages train at a fraction of the dense model's.
TABLE3_LR = {"1.8B": 1.2e-3, "8x1.8B": 2.2e-4, "7B": 1.2e-3, "16B": 4e-4, "8x16B": 1.5e-4}

# Table 6: 7B preparation, Scale-Up to 16B, Scale-Out to 8x16B, and training the 8x16B from scratch on the
# same token total.
TABLE6: tuple[Phase, ...] = (
    Phase("preparation", 480, 989.5, 7, 3600, 279),
    Phase("scale-up", 1024, 240, 16, 1200, 70),
    Phase("scale-out", 1024, 240, 32, 545, 25),
)
TABLE6_SCRATCH = Phase("from scratch", 1024, 240, 32, 5345, 25)

# The paper's own values of the two sides (a, b) of the lab's claims (lab.experiments.claims), where the
# paper gives numbers; the other claims come from a figure's curves or from He et al.'s text.
CLAIM_NUMBERS: dict[str, tuple[float, float]] = {
    "C1": (TABLE1_LOSS["fpi-width"], TABLE1_LOSS["source"]),
    "C2": (TABLE1_LOSS["fpi-interpolate"], TABLE1_LOSS["fpi-stack"]),
    "C3": (TABLE1_LOSS["aki-pro"], TABLE1_LOSS["aki-stack"]),
    "C4": (max(TABLE1_LOSS[k] for k in ("fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro")),
           TABLE1_LOSS["random"]),
    "C7": (TABLE2_LOSS["width-integer"], TABLE2_LOSS["width-noninteger"]),
    "C8": (TABLE2_LOSS["width-noninteger"], TABLE2_LOSS["width-depth"]),
}
