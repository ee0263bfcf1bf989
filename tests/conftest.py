"""Test-wide JAX settings: fail loudly on implicit rank promotion."""

import jax

jax.config.update('jax_numpy_rank_promotion', 'raise')
