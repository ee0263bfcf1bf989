"""A2P stage 2: conditional diffusion over two-hand MANO parameters.

state (params <-> normalized vector X), schedule (cosine, 1000 steps),
pairs (training pairs), sampler (DDIM + collision guidance, one lax.scan),
repair (gated, jitted: stage-1 outputs -> plausible hands).
"""
