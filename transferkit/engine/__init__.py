"""The one training loop, evaluation, feature cache and checkpoints."""
