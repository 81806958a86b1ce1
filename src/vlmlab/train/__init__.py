"""Training: per-module learning rates, stages, checkpoints and the trainer loop."""
