"""Inference: trained stage-1 / stage-2 parameters out of a training run's
folder (read-only), the eval-mode forward on crops and batches, the gated
repair, the crop of an image around given boxes. Used by evaluation,
`a2p_jax.infer`, pair building and the demo; never writes into a workdir."""
