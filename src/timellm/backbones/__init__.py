"""Frozen language models to reprogram: aliases of the offline packages, folders, GGUF files, hub ids."""

from timellm.backbones.loading import ALIASES, Backbone, BackboneError, load_backbone, resolve_backbone_folder

__all__ = ["ALIASES", "Backbone", "BackboneError", "load_backbone", "resolve_backbone_folder"]
