"""Hugging Face checkpoint directories in and out (llama, mistral, qwen2, mixtral, qwen2_moe)."""

from lab.checkpoint.hf_config import SUPPORTED_MODEL_TYPES, config_from_hf, config_to_hf, hf_model_type
from lab.checkpoint.io import read_config
from lab.checkpoint.streaming import CheckpointSource, load_pretrained, save_pretrained, write_lab_checkpoint

__all__ = ["CheckpointSource", "SUPPORTED_MODEL_TYPES", "config_from_hf", "config_to_hf", "hf_model_type", "load_pretrained",
           "read_config", "save_pretrained", "write_lab_checkpoint"]
