"""Stage 2 at inference: a trained denoiser's gated repair of stage-1 outputs.

    repair, config = load_repair(stage2_workdir)
    pred, gated = apply_stage2(pred, repair, models, batch)
"""

from typing import Optional

import jax
import numpy as np
from flax import nnx

from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import repair as repair_lib
from a2p_jax.diffusion import state as state_lib
from a2p_jax.inference.restore import restore_model
from a2p_jax.models import losses as losses_lib
from a2p_jax.models.denoiser import Denoiser

STATS = ('mean', 'std')


def _build(config, meta):
  return Denoiser(config.model, state_lib.TOKENS, rngs=nnx.Rngs(0))


def restore(workdir: str, *, step: Optional[int] = None):
  """(graphdef, model_state, stats numpy {'mean', 'std'}, config, step) of
  the denoiser in checkpoint `step` (default: the newest) of a stage-2
  workdir; read-only, model arrays and statistics only."""
  like = {f'stats.{k}': jax.ShapeDtypeStruct((state_lib.DIM,), np.float32) for k in STATS}
  r = restore_model(workdir, _build, prefix='train.0.', step=step, extras=like)
  stats = {k: np.asarray(r.extras[f'stats.{k}']) for k in STATS}
  return r.graphdef, r.state, stats, r.config, r.step


def load_repair(workdir: str, *, step: Optional[int] = None, mano_dir=None, sampling=None):
  """(jitted gated repair fn, config) from a stage-2 workdir
  (a2p_jax.diffusion.repair.make_repair). sampling: {field: value}
  overriding the config's sampling section (sampling choices do not change
  the weights)."""
  graphdef, model_state, stats, config, _ = restore(workdir, step=step)
  if sampling:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      for k, v in sampling.items():
        config.sampling[k] = v
  models = load_hand_models(mano_dir if mano_dir is not None else (config.data.mano_dir or None))
  return repair_lib.make_repair(graphdef, model_state, stats, models, config), config


def apply_stage2(pred: dict, repair_fn, models, batch: dict, boxes=None, *, seed: int = 0,
                 joints: str = 'kinematic'):
  """Stage-2 repair of stage-1 predictions (numpy dicts of `load_stage1`'s
  predict). `boxes` (n, 2, 4) x_min, y_min, x_max, y_max px in the source
  image, right then left (detector or user boxes); None: each hand's
  projected predicted mesh. Returns (pred with repaired params, joints,
  meshes and rel_root, repaired (n,) bool: the frames the repair changed,
  info['repaired']); on repaired frames rel_root is
  the repaired hands' left-minus-right wrist (stage 1's hands are placed by
  its rel_root head, so that is its estimate plus the repair's change).
  `joints`: the stage-1 model's (`stage1.mano_joints(config)`)."""
  params = {k: np.asarray(pred[k], np.float32) for k in repair_lib.KEYS}
  if boxes is None:
    boxes = np.asarray(repair_lib.boxes_from_params(params, models,
                                                    np.asarray(batch['focal'], np.float32),
                                                    np.asarray(batch['princpt'], np.float32)))
  fixed, info = repair_fn(params, np.asarray(boxes, np.float32), jax.random.key(seed))
  gated = np.asarray(info.get('repaired', info['gated']))
  mesh = losses_lib.mano_outputs({k: fixed[k] for k in repair_lib.KEYS}, models, joints)
  out = dict(pred)
  for k in repair_lib.KEYS:
    out[k] = np.asarray(fixed[k], np.float64)
  out['joints'] = np.asarray(mesh['joints_cam'], np.float64)
  out['verts'] = np.asarray(mesh['vertices'], np.float64)
  # Stage 1's hands come placed by its relative-root head (their wrist
  # joints differ by rel_root: stage1.make_forward), so the repaired hands'
  # wrist difference is the repaired relative root, what MRRPE scores.
  wrists = out['joints'][:, losses_lib.WRIST::21]
  out['rel_root'] = np.where(gated[:, None], wrists[:, 1] - wrists[:, 0],
                             np.asarray(pred['rel_root'], np.float64))
  return out, gated
