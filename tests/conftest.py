"""Test-wide JAX settings: fail loudly on implicit rank promotion; one
persistent compilation cache per test session, so the end-to-end tests that
run the same training program several times (resume, tripwire) compile it
once (a cached executable is bit-identical to a fresh compile)."""

import os
import tempfile

import jax

jax.config.update('jax_numpy_rank_promotion', 'raise')

_CACHE = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                               tempfile.mkdtemp(prefix='a2p_jax_test_cache_'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
