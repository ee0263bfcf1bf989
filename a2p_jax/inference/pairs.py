"""Stage-2 training pairs (ii) from a stage-1 run: the penetrating
predictions of its checkpoints on a data set, with their ground truth.

    gt, cond = stage1_pairs(stage1_workdir, dataset, models, 'pairs.npz', steps='all')

Each checkpoint's pairs are written beside the output as they are made
(OUT.step<S>.npz), so a long run on a pod resumes where it stopped; the
stage-1 run is only read.
"""

import os
from typing import Callable, Optional, Sequence, Union

import numpy as np

from a2p_jax.diffusion import pairs as pairs_lib
from a2p_jax.inference.stage1 import params_predict_fn
from a2p_jax.runtime.checkpoint import CheckpointError, checkpoint_steps


def resolve_steps(workdir: str, steps: Union[None, str, Sequence[int]]) -> list:
  """None: the newest checkpoint; 'all': every saved step; or the given
  steps, each of which must exist (CheckpointError names the missing)."""
  have = checkpoint_steps(workdir)
  if not have:
    raise CheckpointError(
        f"no checkpoint in {os.path.join(os.path.abspath(workdir), 'checkpoints')}")
  if steps is None:
    return have[-1:]
  if isinstance(steps, str):
    if steps != 'all':
      raise ValueError(f"steps: 'all', None or a list of steps, got {steps!r}")
    return have
  missing = sorted(set(int(s) for s in steps) - set(have))
  if missing:
    raise CheckpointError(f'{os.path.abspath(workdir)}: no checkpoint at step(s) {missing} '
                          f'(saved: {have})')
  return sorted(set(int(s) for s in steps))


def stage1_pairs(workdir: str, dataset, models, path: str, *,
                 steps: Union[None, str, Sequence[int]] = 'all',
                 mano_dir: Optional[str] = None, min_depth_m: float = 1e-3,
                 max_examples: Optional[int] = None, progress: bool = False,
                 log: Callable[[str], None] = print):
  """(gt, cond) of every chosen checkpoint's penetrating predictions
  (deeper than min_depth_m) on `dataset`, concatenated, written to `path`
  (.npz, source 1). Weaker (earlier) checkpoints penetrate more often and
  differently, hence several. An existing `path` (or a checkpoint's part
  file) is read, not remade: delete them to rebuild with other settings
  (min_depth_m, max_examples, data)."""
  if not path.endswith('.npz'):
    raise ValueError(f'pairs file must end in .npz, got {path!r}')
  if os.path.exists(path):
    return pairs_lib.load(path)[:2]
  gts, conds = [], []
  for step in resolve_steps(workdir, steps):
    part = f'{path[:-4]}.step{step}.npz'
    if not os.path.exists(part):
      g, c = pairs_lib.prediction_pairs(params_predict_fn(workdir, mano_dir, step), dataset,
                                        models, max_examples=max_examples,
                                        min_depth_m=min_depth_m, progress=progress)
      pairs_lib.save(part, g, c, source=np.ones(len(g['betas'])))
      log(f'stage-1 step {step}: {len(g["betas"])} of '
          f'{len(dataset) if max_examples is None else min(len(dataset), max_examples)} '
          f'examples penetrate -> {part}')
    g, c, _ = pairs_lib.load(part)
    gts.append(g)
    conds.append(c)
  gt, cond = pairs_lib.concat(*gts), pairs_lib.concat(*conds)
  pairs_lib.save(path, gt, cond, source=np.ones(len(gt['betas'])))
  return gt, cond
