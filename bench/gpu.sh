#!/bin/sh
# One H200, under 8 minutes: CUDA parity with transformers, then the MFU of the 1B dense and 8x1B MoE
# recipes; writes bench/mfu-dense-1b.json, bench/mfu-moe-8x1b.json and bench/gpu.json (lab/bench/gpu.py).
# Extra options pass through, e.g. --budget-s 600, or --dry-run to try it on a CPU.
cd "$(dirname "$0")/.." && exec "${PYTHON:-python}" -m lab bench gpu --out bench "$@"
