"""EfficientScale Lab: model growth (Scale-Up) and MoE upcycling (Scale-Out) on an Aquila-style decoder.

Importing the package only defines things; nothing runs at import.
"""

from lab.checkpoint import load_pretrained, save_pretrained
from lab.config import ModelConfig
from lab.generate import generate
from lab.model import DecoderLM, ModelOutput

__all__ = ["DecoderLM", "ModelConfig", "ModelOutput", "generate", "load_pretrained", "save_pretrained"]
