"""The trainer: mesh and sharding, optimizer, losses, checkpoints, and the training loop."""
