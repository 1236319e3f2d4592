"""Strategies: how a pretrained backbone is adapted (one module each, registered by name)."""
