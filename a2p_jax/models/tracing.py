"""Linear-time tracing of NNX models on jax 0.10.2.

flax NNX probes `getattr(value, 'sharding', None)` on every Variable
assignment (parameter creation, RNG counters, BatchNorm statistics). On a
tracer, jax 0.10.2 answers with an AttributeError whose message walks every
equation traced so far to say where the tracer came from, so tracing an NNX
model costs O(n^2) in its size (jax-ml/jax pull request 40041 removes that
message). Measured 2026-12-02 on this 2-core CPU: the paper model's
`nnx.eval_shape` 4.7 s -> 1.0 s; the tiny stage-1 train step 12.4 s -> 6.6 s.

`install()` (run when a2p_jax.models is imported) makes `Tracer.sharding`
raise the same AttributeError without the walk. Nothing else changes:
`hasattr` / `getattr` give the same answers, and only that one error message
loses its "the error occurred while tracing ..." sentence.
"""

from jax._src import core


def _sharding(self):
  # The same exception as jax's, without `self._origin_msg()`.
  raise AttributeError(f"The 'sharding' attribute is not available on {self._error_repr()}.")


def install() -> bool:
  """Replaces Tracer.sharding when this jax builds the costly message.
  Returns whether the property is (now) the linear-time one."""
  prop = core.Tracer.__dict__.get('sharding')
  if not isinstance(prop, property):
    return False
  if prop.fget is _sharding:
    return True
  names = getattr(prop.fget, '__code__', None)
  if names is None or '_origin_msg' not in names.co_names:
    return False  # a jax without the quadratic message: leave it alone
  core.Tracer.sharding = property(_sharding)
  return True
