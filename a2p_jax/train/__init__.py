"""Training: mesh and shardings, checkpoints, metrics, the stage-1 loop."""
