"""A2P two-hand reconstruction in JAX/Flax."""
