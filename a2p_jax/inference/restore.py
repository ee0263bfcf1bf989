"""Parameters of a trained model, read-only, from exactly one checkpoint.

Evaluation and inference read a training run's folder and never change it:
no CheckpointManager (it creates folders and cleans up the temporary
directories of a save in progress), no optimizer state built or read, no
fallback to an older step (scores must say which weights they are), and
nothing moved aside. The checkpoint's 'state' item is read with a partial
restore of the model's arrays only; its config comes from the same step's
'meta' item. Training-time resume with fallback is a different function
(`a2p_jax.runtime.checkpoint.restore_latest`).
"""

import dataclasses
import json
import os
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from a2p_jax.runtime.checkpoint import CheckpointError, flatten, read_meta, unflatten


@dataclasses.dataclass(frozen=True)
class Restored:
  """A model ready for `nnx.merge(graphdef, state)` in eval mode."""
  config: ml_collections.ConfigDict   # the training config saved with the step
  graphdef: nnx.GraphDef
  state: nnx.State                    # the model's arrays (+ fresh RNG state)
  step: int
  meta: dict                          # the step's meta item
  extras: Dict[str, jax.Array]        # other restored arrays, by checkpoint name


def restore_model(workdir: str, build: Callable[[ml_collections.ConfigDict, dict], nnx.Module],
                  *, prefix: str, step: Optional[int] = None,
                  extras: Optional[Dict[str, jax.ShapeDtypeStruct]] = None) -> Restored:
  """The model of checkpoint `step` (default: the newest) of `workdir`.

  build(config, meta) -> the model (run under nnx.eval_shape: nothing is
  initialised); its Param and BatchStat arrays are read from the
  checkpoint's flat names `prefix + name` (the train state is (model,
  optimizer): prefix '0.'). extras: more flat names to read (e.g. stage
  2's normalisation statistics). Any failure is a CheckpointError naming
  the checkpoint."""
  step, meta = read_meta(workdir, step)
  where = os.path.abspath(os.path.join(workdir, 'checkpoints', str(step)))
  try:
    config = ml_collections.ConfigDict(json.loads(meta['config']))
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f'checkpoint {where}: its meta item has no readable config ({e})'
                          ) from None
  abstract = nnx.eval_shape(lambda: build(config, meta))
  graphdef, arrays, rest = nnx.split(abstract, (nnx.Param, nnx.BatchStat), ...)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  flat = flatten(arrays)
  like = {prefix + k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device)
          for k, v in flat.items()}
  for k, v in (extras or {}).items():
    like[k] = jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device)
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      # One small array first: a damaged checkpoint then fails on one read,
      # not on hundreds in flight at once (orbax leaves those to finish on a
      # closed event loop, each an "Event loop is closed" warning).
      probe = min(like, key=lambda k: (int(np.prod(like[k].shape)), k))
      for item in ({probe: like[probe]}, like):
        got = checkpointer.restore(
            os.path.join(where, 'state'),
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=True))
    missing = sorted(set(like) - set(got))
    if missing:
      raise KeyError(f'no array {missing[0]!r} ({len(missing)} missing)')
  except Exception as e:  # noqa: BLE001 - any read failure: name the checkpoint
    msg = str(e).splitlines()[0][:300] if str(e) else ''
    raise CheckpointError(f'checkpoint {where} is unreadable ({type(e).__name__}: {msg})'
                          ) from None
  restored = unflatten({k: got[prefix + k] for k in flat}, arrays)
  state = nnx.merge_state(restored, _materialise(rest))
  return Restored(config=config, graphdef=graphdef, state=state, step=int(step), meta=meta,
                  extras={k: got[k] for k in (extras or {})})


def _materialise(abstract_state):
  """Concrete stand-ins for state that inference does not read (dropout
  RNG keys and counters)."""
  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    return jnp.zeros(x.shape, x.dtype)
  return jax.tree.map(one, abstract_state)


def check_outside_runs(out_dir: str, *workdirs: Optional[str]) -> None:
  """An output folder inside a training run's folder would change the run:
  a ValueError naming both."""
  out = os.path.realpath(out_dir)
  for w in workdirs:
    if w and os.path.commonpath([out, os.path.realpath(w)]) == os.path.realpath(w):
      raise ValueError(f'output folder {out_dir} is inside the training run {w}: evaluation '
                       f'and inference never write into a run\'s folder; write elsewhere')
