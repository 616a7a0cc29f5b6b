"""EfficientScale Lab: model growth (Scale-Up) and MoE upcycling (Scale-Out) on an Aquila-style decoder.

Importing the package only defines things; nothing runs at import, except under `python -m lab`, where
a signal during the seconds of imports must end the command cleanly (lab.interrupts).
"""

from lab import interrupts as _interrupts

if _interrupts.started_as_command():
    _interrupts.exit_at_once_on_signal()

from lab.checkpoint import load_pretrained, save_pretrained
from lab.config import ModelConfig
from lab.generate import generate
from lab.model import DecoderLM, ModelOutput

__all__ = ["DecoderLM", "ModelConfig", "ModelOutput", "generate", "load_pretrained", "save_pretrained"]
