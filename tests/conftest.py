"""Test-wide JAX settings: fail loudly on implicit rank promotion; a fresh
set of JAX caches per test module.

jax 0.10.2 can hand a function's float32 executable to a later call made
under `jax.enable_x64` with the same numpy inputs (seen: mano_jax's jitted
forward after tests/test_diffusion_pairs.py, RuntimeProgramInputMismatch in
the float64 reference tests). Modules mix precisions only on purpose and
within themselves, so clearing at module boundaries isolates them.
"""

import os

# Set before JAX starts a backend. The tests compile many small programs and
# run each a few times: XLA's LLVM optimisation costs more than it saves here
# (the tiny stage-1 train step: 64 s -> 27 s to compile, measured
# 2026-12-02), and so do the CPU fusion emitters (21.5 s -> 13.3 s, and its
# steps ran 1.4x faster). Appended, so a user's XLA_FLAGS stay; subprocesses
# inherit it (tests/tiny_training.xla_flags adds a device count to it).
FAST_COMPILE = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                '--xla_cpu_use_fusion_emitters=false')
if FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from a2p_jax.data.hands import load_hand_models  # noqa: E402

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


# Files whose tests take longest (measured 2026-12-02), collected first so
# the two `make test` workers start them early instead of finishing on one.
_LONG_FILES = ('test_train_stage1.py', 'test_diffusion_train.py', 'test_eval_predictions.py',
               'test_bad_input.py', 'test_teacher_features.py', 'test_diffusion_guidance.py',
               'test_properties.py', 'test_models_pretrained.py', 'test_diffusion_pairs.py',
               'test_models_stage1.py', 'test_models_losses.py', 'test_tpu_compile.py')


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(_LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable
