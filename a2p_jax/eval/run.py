"""Evaluation entry points: a predictions file, or a trained checkpoint."""

import os
import time
from typing import Optional

from a2p_jax.eval import evaluate, report
from a2p_jax.eval.predictions import Predictions


def dataset(name: str, root: str, split: str, *, mano_dir: Optional[str] = None,
            subset: Optional[str] = None):
  """The reader for a data set split (InterHand2.6M layout, HIC or synthetic)."""
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f'--root {root!r} is not a directory')
  if name in ('synthetic', 'interhand26m'):
    from a2p_jax.data.interhand26m import InterHand26M
    return InterHand26M(root, split, mano_dir=mano_dir, subset=subset)
  if name == 'hic':
    if split != 'test':
      raise ValueError(f'HIC has only a test split, got --split {split!r}')
    from a2p_jax.data.hic import HIC
    return HIC(root, mano_dir=mano_dir)
  raise ValueError(f'--dataset must be synthetic, interhand26m or hic, got {name!r}')


def _write_report(out_dir, res, meta, ds, predict) -> dict:
  summary = report.write(out_dir, res, meta, examples=ds, predict=predict)
  print(open(os.path.join(out_dir, 'report.md')).read())
  print(f'wrote {out_dir}/report.json, report.md, per_sample.npz, figures/')
  return summary


def evaluate_predictions(path: str, name: str, root: str, split: str, out_dir: str, *,
                         mano_dir: Optional[str] = None, subset: Optional[str] = None,
                         penetration: bool = True, chunk: int = 64) -> dict:
  """Scores a predictions file (see a2p_jax.eval.predictions) on a split."""
  from a2p_jax.data.hands import load_hand_models
  t0 = time.time()
  preds = Predictions(path)
  ds = dataset(name, root, split, mano_dir=mano_dir, subset=subset)
  models = load_hand_models(mano_dir)
  # Coverage first, so a bad file fails before minutes of scoring.
  from a2p_jax.teacher import source_annot_ids
  ids = source_annot_ids(ds).tolist()
  have = preds.ids()
  missing = [a for a in ids if a not in have]
  if missing:
    from a2p_jax.eval.predictions import PredictionsError
    raise PredictionsError(f'{path}: no prediction for annotation id {missing[0]} '
                           f'({len(missing)} of {len(ids)} ids of {name}/{split} missing)')

  def predict(exs):
    gt = evaluate.ground_truth(exs, models)
    preds.check_covers(gt['annot_id'], gt['mano_valid'])
    return preds.hands([e['annot_id'] for e in exs], models)

  res = evaluate.score(ds, predict, models, chunk=chunk, penetration=penetration)
  meta = {'dataset': name, 'split': split, 'root': os.path.abspath(root), 'subset': subset,
          'predictions': os.path.abspath(path), 'mano': mano_dir or 'procedural (NOT MANO)',
          'seconds': round(time.time() - t0, 1)}
  return _write_report(out_dir, res, meta, ds, predict)


def eval_batch(examples, cfg, models, join=None) -> dict:
  """Reader examples -> the model inputs of evaluation: centred crops of
  the two-hand box, no augmentation (`pipeline.process`, training=False);
  with `join` (a teacher-prior join) also 'priors'."""
  import numpy as np

  from a2p_jax.data import pipeline
  from a2p_jax.train.stage1 import MODEL_INPUTS
  if join is not None:
    examples = [join(e) for e in examples]
  rng = np.random.default_rng(0)  # unused without training augmentation
  items = [pipeline.process(e, rng, cfg=cfg, models=models, training=False) for e in examples]
  keys = MODEL_INPUTS + (('priors',) if join is not None else ())
  return {k: np.stack([it[k] for it in items]) for k in keys}


def load_stage1(workdir: str, *, step: Optional[int] = None, mano_dir: Optional[str] = None):
  """A trained stage-1 checkpoint: (config, predict, step, models).

  predict(batch) takes pipeline batches (image uint8, affine, focal,
  princpt; any batch size, padded to a fixed one so it compiles once) and
  returns numpy {'joints' (n, 42, 3) m camera space, 'verts' (n, 2, V, 3),
  'rel_root' (n, 3), 'pose_6d', 'betas', 'root_cam'}. The inference path:
  the FAE replaces the teacher (no priors needed); a batch with 'priors'
  (teacher maps) fuses F_p instead (the distillation-gap measurement). The newest checkpoint
  (or `step`) must restore: an unreadable one is a CheckpointError, never
  a fallback (scores must say which weights they are)."""
  import json

  import jax
  import ml_collections
  import numpy as np
  from flax import nnx

  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.train import checkpoint as ckpt_lib
  from a2p_jax.train import sharding as shard_lib
  from a2p_jax.train import stage1

  step, meta = ckpt_lib.read_meta(workdir, step)
  config = ml_collections.ConfigDict(json.loads(meta['config']))
  mesh = shard_lib.make_mesh(1)
  graphdef, state, _, _ = stage1.create_train_state(config, int(meta['prior_channels']), 1, mesh)
  mngr = ckpt_lib.manager(workdir, async_save=False)
  try:
    step, state, _ = ckpt_lib.restore_exact(mngr, state, step)
  finally:
    mngr.close()
  models = load_hand_models(mano_dir or config.data.mano_dir or None)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  mano = jax.device_put(tuple(models), replicated)
  data_sharding = shard_lib.batch_sharding(mesh)
  n_dev = mesh.devices.size

  forward = stage1.make_predict(graphdef)

  size = max(int(config.get('eval_batch_size', 32)) // n_dev, 1) * n_dev

  def predict(batch):
    n = len(batch['image'])
    keys = stage1.MODEL_INPUTS + (('priors',) if 'priors' in batch else ())
    outs = []
    for lo in range(0, n, size):
      part = {k: np.asarray(batch[k][lo:lo + size]) for k in keys}
      m = len(part['image'])
      if m < size:  # pad with copies of the last example: one compiled shape
        part = {k: np.concatenate([v, np.repeat(v[-1:], size - m, 0)]) for k, v in part.items()}
      part = jax.device_put(part, data_sharding)
      got = forward(state, part['image'], part.get('priors'), part['affine'], part['focal'],
                    part['princpt'], mano)
      outs.append({k: np.asarray(v, np.float64)[:m] for k, v in got.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

  predict.prior_channels = int(meta['prior_channels'])
  return config, predict, step, models


def evaluate_checkpoint(workdir: str, out_dir: str, *, dataset_name: Optional[str] = None,
                        root: Optional[str] = None, split: str = 'test',
                        mano_dir: Optional[str] = None, subset: Optional[str] = None,
                        step: Optional[int] = None, penetration: bool = True,
                        limit: int = 0, chunk: int = 64, stage2: Optional[str] = None,
                        priors: Optional[str] = None,
                        stage2_sampling: Optional[dict] = None) -> dict:
  """Scores a stage-1 checkpoint on a split. Data set, root and MANO folder
  default to the checkpoint's training config (the synthetic set it was
  trained on lives in WORKDIR/data/synthetic). Each example is cropped
  around its two hands' ground-truth box, centred, no augmentation (the
  InterWild test protocol). `stage2`: a stage-2 workdir; its gated repair
  runs on the stage-1 outputs (boxes: the projected predicted meshes);
  `stage2_sampling` overrides fields of its config.sampling.
  `priors`: a prior store of this split: the teacher's maps replace the FAE
  at inference (the paper's distillation gap; needs a model trained with
  priors)."""
  from a2p_jax.data import pipeline
  from a2p_jax.train import input as input_lib

  t0 = time.time()
  config, predict_batch, step, models = load_stage1(workdir, step=step, mano_dir=mano_dir)
  d = config.data
  name = dataset_name or d.dataset
  if root is None:
    root = d.root or (os.path.join(workdir, 'data', 'synthetic') if name == 'synthetic' else '')
  mano_dir = mano_dir if mano_dir is not None else (d.mano_dir or None)
  ds = dataset(name, root, split, mano_dir=mano_dir, subset=subset)
  if limit:
    ds = [ds[i] for i in range(min(limit, len(ds)))]
  cfg = input_lib.augment_config(config)
  repair_fn, cfg2, gated_total = None, None, [0]
  join = None
  if priors:
    from a2p_jax import teacher as teacher_lib
    store = teacher_lib.open_store(priors)
    store.check_covers(teacher_lib.source_annot_ids(ds))
    channels = teacher_lib.select_channels(store.meta, d.get('prior_groups') or None)
    if len(channels) != predict_batch.prior_channels:
      raise ValueError(f'{priors}: {len(channels)} prior channels for groups '
                       f'{d.get("prior_groups")!r}, but the checkpoint was trained with '
                       f'{predict_batch.prior_channels} (trained without priors?)')
    join = pipeline._JoinPriors(store, channels)
  if stage2:
    from a2p_jax.diffusion import repair as repair_lib
    repair_fn, cfg2 = repair_lib.load(stage2, mano_dir=mano_dir, sampling=stage2_sampling)

  def predict(exs):
    batch = eval_batch(exs, cfg, models, join)
    pred = predict_batch(batch)
    if repair_fn is not None:
      pred, gated = apply_stage2(pred, repair_fn, models, batch)
      gated_total[0] += int(gated.sum())
    return pred

  res = evaluate.score(ds, predict, models, chunk=chunk, penetration=penetration)
  meta = {'dataset': name, 'split': split, 'root': os.path.abspath(root), 'subset': subset,
          'checkpoint': os.path.abspath(os.path.join(workdir, 'checkpoints', str(step))),
          'step': int(step), 'mano': mano_dir or 'procedural (NOT MANO)',
          'stage2': os.path.abspath(stage2) if stage2 else None,
          'stage2_repaired': gated_total[0] if stage2 else None,
          'stage2_sampling': dict(cfg2.sampling) if stage2 else None,
          'teacher_priors_at_inference': os.path.abspath(priors) if priors else None,
          'seconds': round(time.time() - t0, 1)}
  return _write_report(out_dir, res, meta, ds, predict)


def apply_stage2(pred: dict, repair_fn, models, batch: dict, boxes=None, *, seed: int = 0):
  """Stage-2 repair of stage-1 predictions (numpy dicts of `load_stage1`'s
  predict). `boxes` (n, 2, 4) x_min, y_min, x_max, y_max px in the source
  image, right then left (detector or user boxes); None: each hand's
  projected predicted mesh. Returns (pred with repaired params, joints,
  meshes and rel_root, gated (n,) bool); the repaired rel_root is stage
  1's plus the repair's change of the left-minus-right root."""
  import jax
  import numpy as np

  from a2p_jax.diffusion import repair as repair_lib
  from a2p_jax.models import losses as losses_lib
  params = {k: np.asarray(pred[k], np.float32) for k in repair_lib.KEYS}
  if boxes is None:
    boxes = np.asarray(repair_lib.boxes_from_params(params, models,
                                                    np.asarray(batch['focal'], np.float32),
                                                    np.asarray(batch['princpt'], np.float32)))
  fixed, info = repair_fn(params, np.asarray(boxes, np.float32), jax.random.key(seed))
  gated = np.asarray(info['gated'])
  mesh = losses_lib.mano_outputs({k: fixed[k] for k in repair_lib.KEYS}, models)
  out = dict(pred)
  for k in repair_lib.KEYS:
    out[k] = np.asarray(fixed[k], np.float64)
  out['joints'] = np.asarray(mesh['joints_cam'], np.float64)
  out['verts'] = np.asarray(mesh['vertices'], np.float64)
  # The relative root keeps stage 1's own estimate (the rel_root head, what
  # MRRPE scores) plus the displacement the repair applied to the left hand
  # relative to the right; replacing it by the root_cam difference would
  # swap the estimator on gated frames (154-164 mm MRRPE vs the head's
  # 135-141 on the synthetic ablation) and charge that to stage 2.
  before, after = np.asarray(pred['root_cam'], np.float64), out['root_cam']
  moved = (after[:, 1] - after[:, 0]) - (before[:, 1] - before[:, 0])
  out['rel_root'] = np.where(gated[:, None], np.asarray(pred['rel_root'], np.float64) + moved,
                             pred['rel_root'])
  return out, gated

