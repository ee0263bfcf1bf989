"""Test-wide JAX settings: fail loudly on implicit rank promotion; a fresh
set of JAX caches per test module.

jax 0.10.2 can hand a function's float32 executable to a later call made
under `jax.enable_x64` with the same numpy inputs (seen: mano_jax's jitted
forward after tests/test_diffusion_pairs.py, RuntimeProgramInputMismatch in
the float64 reference tests). Modules mix precisions only on purpose and
within themselves, so clearing at module boundaries isolates them.
"""

import jax
import pytest

from a2p_jax.data.hands import load_hand_models

jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture(scope='session')
def models():
  """(right, left): the procedural hand (not MANO). Read only; load_hand_models
  caches its result, so tests shared one pair before this fixture existed too."""
  return load_hand_models(None)


@pytest.fixture(scope='module', autouse=True)
def _fresh_jax_caches():
  jax.clear_caches()
  yield
