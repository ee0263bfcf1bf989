"""Runtime: checkpoints, device meshes and shardings, multi-host coordination."""
