"""Checkpoints: one orbax CheckpointManager for train state, data iterator
and a small JSON record; resume from the newest checkpoint that restores.

Layout: WORKDIR/checkpoints/<step>/{state,data,meta}. Saves are async and
atomic (orbax writes a temporary directory and renames it when complete;
leftovers of a killed save are removed at start). On restore, a newest
checkpoint that fails to read is reported and the previous one is tried;
the unreadable ones are then moved to WORKDIR/checkpoints_unreadable (kept,
and out of the way of the resumed run, which writes those steps again).
If checkpoints exist and none restores, training stops with an error
instead of silently starting from scratch.
"""

import json
import logging
import os
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp

from a2p_jax.runtime.sharding import all_processes, barrier

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  pass


def has_checkpoint(workdir: str) -> bool:
  """Whether WORKDIR/checkpoints holds a finished step (unfinished orbax
  temporary folders do not count): a training run then resumes, never
  starts from scratch."""
  return bool(ocp.utils.checkpoint_steps(os.path.join(workdir, 'checkpoints')))


def manager(workdir: str, *, max_to_keep: int = 3, async_save: bool = True,
            keep_period: int = 0) -> ocp.CheckpointManager:
  """The training run's checkpoint manager: the newest max_to_keep steps,
  and (keep_period > 0) every step that is a multiple of keep_period."""
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save, keep_period=keep_period or None)
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'data': grain.checkpoint.CheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


def _key_name(k) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _is_prng_key(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def flatten(tree) -> dict:
  """Pytree -> {'a.b.0': array}: plain names orbax stores on any backend;
  typed PRNG keys stored as their raw key data."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  out = {}
  for path, x in leaves:
    out['.'.join(_key_name(k) for k in path)] = jax.random.key_data(x) if _is_prng_key(x) else x
  if len(out) != len(leaves):
    raise ValueError('checkpoint leaf names collide after flattening')
  return out


def unflatten(flat: dict, like):
  """Inverse of `flatten`, shaped like `like` (keys rewrapped)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  vals = []
  for path, x in leaves:
    v = flat['.'.join(_key_name(k) for k in path)]
    vals.append(jax.random.wrap_key_data(v, impl=jax.random.key_impl(x)) if _is_prng_key(x)
                else v)
  return jax.tree_util.tree_unflatten(treedef, vals)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_iter=None,
         meta: Optional[dict] = None, *, force: bool = False) -> bool:
  items = {'state': ocp.args.StandardSave(flatten(state)),
           'meta': ocp.args.JsonSave(dict(meta or {}, step=int(step)))}
  if data_iter is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iter)
  return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


def restore_latest(mngr: ocp.CheckpointManager, state_like: Any, data_iter=None):
  """(step, state, meta) from the newest checkpoint that restores, or
  (None, None, None) when there is none. `state_like`: a tree of arrays
  (their shapes, dtypes and shardings are the restore targets). The data
  iterator, when given, is restored in place."""
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return None, None, None
  failures = []
  for step in steps:
    items = {'state': ocp.args.StandardRestore(_abstract(flatten(state_like))),
             'meta': ocp.args.JsonRestore()}
    if data_iter is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iter)
    msg = None
    try:
      got = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # noqa: BLE001 - any read failure means: try the previous one
      msg = f'checkpoint {os.path.join(str(mngr.directory), str(step))} is unreadable ' \
            f'({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""})'
    # Every process resumes from the same step: one that cannot read it
    # makes all of them try the previous one.
    if not all_processes('checkpoint_readable', msg is None) and msg is None:
      msg = (f'checkpoint {os.path.join(str(mngr.directory), str(step))} is unreadable '
             f'on another process')
    if msg is not None:
      failures.append(msg)
      log.warning('%s; trying the previous one', msg)
      print(f'WARNING: {msg}; trying the previous one', flush=True)
      continue
    if failures:
      print(f'resumed from step {step} after skipping {len(failures)} unreadable '
            f'checkpoint(s)', flush=True)
      _set_aside(mngr, [s for s in steps if s > step])
    return step, unflatten(got['state'], state_like), got['meta']
  raise CheckpointError('no checkpoint in ' + str(mngr.directory) + ' could be restored '
                        '(refusing to start from scratch over them):\n  ' +
                        '\n  '.join(failures))


def _set_aside(mngr: ocp.CheckpointManager, steps) -> None:
  """Moves unreadable step directories out of the manager's folder, to
  <dir>_unreadable/<step> (kept for inspection, not deleted), so the resumed
  run can write those steps again (orbax refuses to overwrite a step)."""
  src = str(mngr.directory)
  dst_root = src.rstrip('/') + '_unreadable'
  barrier('checkpoint_set_aside_start')  # every process is done reading them
  if jax.process_index() == 0:
    os.makedirs(dst_root, exist_ok=True)
    for step in steps:
      dst = os.path.join(dst_root, str(step))
      n = 1
      while os.path.exists(dst):
        dst, n = os.path.join(dst_root, f'{step}.{n}'), n + 1
      os.replace(os.path.join(src, str(step)), dst)
      print(f'moved unreadable checkpoint {os.path.join(src, str(step))} to {dst}', flush=True)
  barrier('checkpoint_set_aside_done')
  mngr.reload()


def restore_exact(mngr: ocp.CheckpointManager, state_like: Any, step: Optional[int] = None):
  """(step, state, meta) of checkpoint `step` (default: the newest), for
  evaluation and inference: no fallback; an unreadable checkpoint or none
  at all is a CheckpointError naming the directory."""
  steps = sorted(mngr.all_steps())
  if not steps:
    raise CheckpointError(f'no checkpoint in {mngr.directory}')
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise CheckpointError(f'no checkpoint for step {step} in {mngr.directory} (have {steps})')
  items = {'state': ocp.args.StandardRestore(_abstract(flatten(state_like))),
           'meta': ocp.args.JsonRestore()}
  try:
    got = mngr.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f'checkpoint {os.path.join(str(mngr.directory), str(step))} is '
                          f'unreadable ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""})'
                          ) from None
  return step, unflatten(got['state'], state_like), got['meta']


def checkpoint_steps(workdir: str) -> list:
  """The steps of WORKDIR/checkpoints, ascending (folders named by a step)."""
  root = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(root) if s.isdigit()) if os.path.isdir(root) else []


def read_meta(workdir: str, step: Optional[int] = None) -> tuple:
  """(step, meta dict) of a checkpoint without building a model (the model's
  config and prior channels live there)."""
  root = os.path.join(workdir, 'checkpoints')
  steps = checkpoint_steps(workdir)
  if not steps:
    raise CheckpointError(f'no checkpoint in {os.path.abspath(root)} '
                          f'(train first, or give the workdir of a training run)')
  step = steps[-1] if step is None else int(step)
  path = os.path.join(root, str(step), 'meta', 'metadata')
  try:
    with open(path) as f:
      return step, json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f'checkpoint {os.path.join(root, str(step))}: cannot read its '
                          f'meta item {path} ({e})') from None
