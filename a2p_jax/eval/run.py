"""Evaluation entry points: a predictions file, or a trained checkpoint."""

import json
import os
import time
from typing import Optional

import numpy as np

from mano_jax import joints as joints_lib

from a2p_jax import teacher as teacher_lib
from a2p_jax.data import open_source
from a2p_jax.data.hands import load_hand_models
from a2p_jax.eval import evaluate, freihand, report
from a2p_jax.eval.predictions import Predictions, PredictionsError
from a2p_jax.inference.restore import check_outside_runs
from a2p_jax.inference.stage1 import augment_config, eval_batch, load_stage1, mano_joints
from a2p_jax.inference.stage2 import apply_stage2, load_repair


REPAIR_FIGURES = 8


def _check_root(root):
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f'--root {root!r} is not a directory')


def dataset(name: str, root: str, split: str, *, mano_dir: Optional[str] = None,
            subset: Optional[str] = None):
  """The reader of a data set split (a2p_jax.data.open_source), or an error
  naming the flag."""
  _check_root(root)
  options = {'subset': subset} if subset else {}
  return open_source(name, root, split, mano_dir=mano_dir, **options)


def rules_of(name: str) -> str:
  """Which ground-truth rules (evaluate.RULES) score a data set."""
  return 'hic' if name == 'hic' else 'interhand26m'


def _write_report(out_dir, res, meta, ds, predict, models) -> dict:
  summary = report.write(out_dir, res, meta, examples=ds, predict=predict,
                         faces=[np.asarray(m.faces) for m in models])
  print(open(os.path.join(out_dir, 'report.md')).read())
  print(f'wrote {out_dir}/report.json, report.md, per_sample.npz, figures/')
  return summary


def evaluate_predictions(path: str, name: str, root: str, split: str, out_dir: str, *,
                         mano_dir: Optional[str] = None, subset: Optional[str] = None,
                         penetration: bool = True, chunk: int = 64) -> dict:
  """Scores a predictions file (see a2p_jax.eval.predictions) on a split."""
  t0 = time.time()
  preds = Predictions(path)
  ds = dataset(name, root, split, mano_dir=mano_dir, subset=subset)
  models = load_hand_models(mano_dir)
  # Coverage first, so a bad file fails before minutes of scoring.
  ids = teacher_lib.source_annot_ids(ds).tolist()
  have = preds.ids()
  missing = [a for a in ids if a not in have]
  if missing:
    raise PredictionsError(f'{path}: no prediction for annotation id {missing[0]} '
                           f'({len(missing)} of {len(ids)} ids of {name}/{split} missing)')

  def predict(exs):
    gt = evaluate.ground_truth(exs, models, rules=rules_of(name), check_dark=False)
    preds.check_covers(gt['annot_id'], gt['has_mesh'])
    return preds.hands([e['annot_id'] for e in exs], models)

  res = evaluate.score(ds, predict, models, rules=rules_of(name), chunk=chunk,
                       penetration=penetration)
  meta = {'dataset': name, 'split': split, 'root': os.path.abspath(root), 'subset': subset,
          'predictions': os.path.abspath(path), 'mano': mano_dir or 'procedural (NOT MANO)',
          'seconds': round(time.time() - t0, 1)}
  return _write_report(out_dir, res, meta, ds, predict, models)


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
  check_outside_runs(out_dir, workdir, stage2)
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
  cfg = augment_config(config)
  repair_fn, cfg2, gated_total = None, None, [0]
  # Repaired frames drawn before | after stage 2 (the first few), recorded
  # while scoring only (report.write calls predict again for its figures).
  repaired, recording = [], [True]
  join = None
  if priors:
    store = teacher_lib.open_store(priors)
    store.check_covers(teacher_lib.source_annot_ids(ds))
    channels = teacher_lib.select_channels(store.meta, d.get('prior_groups') or None)
    if len(channels) != predict_batch.prior_channels:
      raise ValueError(f'{priors}: {len(channels)} prior channels for groups '
                       f'{d.get("prior_groups")!r}, but the checkpoint was trained with '
                       f'{predict_batch.prior_channels} (trained without priors?)')
    join = teacher_lib.JoinPriors(store, channels)
  if stage2:
    repair_fn, cfg2 = load_repair(stage2, mano_dir=mano_dir, sampling=stage2_sampling)

  def predict(exs):
    batch = eval_batch(exs, cfg, models, join)
    pred = predict_batch(batch)
    if repair_fn is not None:
      before = pred['verts']
      pred, gated = apply_stage2(pred, repair_fn, models, batch, joints=mano_joints(config))
      gated_total[0] += int(gated.sum())
      if recording[0]:
        for i in np.flatnonzero(gated)[:REPAIR_FIGURES - len(repaired)]:
          repaired.append((exs[i], before[i], pred['verts'][i]))
    return pred

  res = evaluate.score(ds, predict, models, rules=rules_of(name), chunk=chunk,
                       penetration=penetration)
  recording[0] = False
  meta = {'dataset': name, 'split': split, 'root': os.path.abspath(root), 'subset': subset,
          'checkpoint': os.path.abspath(os.path.join(workdir, 'checkpoints', str(step))),
          'step': int(step), 'mano': mano_dir or 'procedural (NOT MANO)',
          'stage2': os.path.abspath(stage2) if stage2 else None,
          'stage2_repaired': gated_total[0] if stage2 else None,
          'stage2_sampling': dict(cfg2.sampling) if stage2 else None,
          'teacher_priors_at_inference': os.path.abspath(priors) if priors else None,
          'seconds': round(time.time() - t0, 1)}
  summary = _write_report(out_dir, res, meta, ds, predict, models)
  if repaired:
    paths = report.repair_figures(out_dir, [r[0] for r in repaired],
                                  np.stack([r[1] for r in repaired]),
                                  np.stack([r[2] for r in repaired]),
                                  [np.asarray(m.faces) for m in models])
    print(f'repaired frames before | after stage 2: {len(paths)} figures in {out_dir}/figures/')
  return summary


def _is_freihand_pred_json(path: str) -> bool:
  """True for FreiHAND's own pred.json ([xyz list, verts list]); False for
  the project's predictions format (a JSON object or an .npz)."""
  if not path.endswith('.json'):
    return False
  with open(path, 'rb') as f:
    head = f.read(64).lstrip()
  return head.startswith(b'[')


def _freihand_predictions(path, n, models):
  """(xyz (n, 21, 3), verts (n, V, 3)) m, FreiHAND order, from either format.
  The project's format: entries keyed by the evaluation index 0..n-1, the
  right hand only; joints entries are scored with their joints (InterHand
  order, reordered), MANO-parameter entries with FreiHAND's joints of their
  mesh (`freihand.mesh_joints`); vertices are required."""
  if _is_freihand_pred_json(path):
    return freihand.read_pred_json(path)
  preds = Predictions(path)
  ids = list(range(n))
  missing = [a for a in ids if a not in preds.ids()]
  if missing:
    raise PredictionsError(f'{path}: no prediction for evaluation index {missing[0]} '
                           f'({len(missing)} of {n} missing; keys are the sample indices)')
  hands = preds.hands(ids, models)
  if hands['verts'] is None or not np.all(np.isfinite(hands['verts'][:, 0])):
    raise PredictionsError(f'{path}: FreiHAND scores the right hand\'s vertices; give '
                           '"vertices" or MANO parameters for every right hand')
  verts = hands['verts'][:, 0]
  xyz = joints_lib.convert(hands['joints'][:, :21], 'interhand', 'openpose')
  regressed = freihand.mesh_joints(models[0], verts)
  xyz = np.where(hands['from_mano'][:, 0, None, None], regressed, xyz)
  return xyz, verts


def _write_freihand_report(out_dir, res, n, meta) -> dict:
  summary = {f'freihand/{k}': float(v) for k, v in res.items()}
  summary['count'] = n
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, 'report.json.tmp')
  with open(tmp, 'w') as f:
    json.dump({'summary': summary, 'protocols': ['freihand'], **meta}, f, indent=1)
  os.replace(tmp, os.path.join(out_dir, 'report.json'))
  md = [f'# Evaluation: freihand / {meta["split"]}', '',
        f'Samples: {n}. FreiHAND protocol (lmb-freiburg/freihand eval.py): PA = '
        'Procrustes with scale per sample, joints and vertices separately; F on aligned '
        'vertices. Errors in mm.', '',
        '| PA-MPJPE | PA-MPVPE | F@5mm | F@15mm | MPJPE | MPVPE |',
        '|---:|---:|---:|---:|---:|---:|',
        '| {pa_mpjpe:.2f} | {pa_mpvpe:.2f} | {f5:.3f} | {f15:.3f} | {mpjpe:.2f} | '
        '{mpvpe:.2f} |'.format(**res), '']
  with open(os.path.join(out_dir, 'report.md'), 'w') as f:
    f.write('\n'.join(md))
  print('\n'.join(md))
  print(f'wrote {out_dir}/report.json, report.md')
  return summary


def evaluate_freihand(path: str, root: str, out_dir: str, *, split: str = 'evaluation',
                      mano_dir: Optional[str] = None) -> dict:
  """Scores FreiHAND predictions with FreiHAND's official protocol
  (a2p_jax.eval.freihand): its own pred.json ([xyz list, verts list],
  metres, one entry per sample of `split` in order) or the project's
  predictions format keyed by the sample index (right hand). Writes
  report.json (summary keys freihand/...) and report.md; returns the summary."""
  t0 = time.time()
  _check_root(root)
  gt_xyz, gt_verts = freihand.read_gt(root, split)
  xyz, verts = _freihand_predictions(path, len(gt_xyz), load_hand_models(mano_dir))
  if len(xyz) != len(gt_xyz):
    raise PredictionsError(f'{path}: {len(xyz)} predictions, but FreiHAND {split} in {root} '
                           f'has {len(gt_xyz)} samples (one per sample, in order)')
  res = freihand.score(xyz, verts, gt_xyz, gt_verts)
  meta = {'dataset': 'freihand', 'split': split, 'root': os.path.abspath(root),
          'predictions': os.path.abspath(path), 'mano': mano_dir or 'procedural (NOT MANO)',
          'seconds': round(time.time() - t0, 1)}
  return _write_freihand_report(out_dir, res, len(xyz), meta)


def evaluate_checkpoint_freihand(workdir: str, out_dir: str, *, root: str,
                                 split: str = 'evaluation', mano_dir: Optional[str] = None,
                                 step: Optional[int] = None, limit: int = 0,
                                 chunk: int = 64) -> dict:
  """A stage-1 checkpoint on FreiHAND, FreiHAND's protocol: each image cropped
  around its hand's ground-truth box (as for the other sets), the right-hand
  slot's mesh scored with FreiHAND's joints of that mesh. Reads the run only."""
  check_outside_runs(out_dir, workdir, None)
  t0 = time.time()
  config, predict_batch, step, models = load_stage1(workdir, step=step, mano_dir=mano_dir)
  mano_dir = mano_dir if mano_dir is not None else (config.data.mano_dir or None)
  ds = dataset('freihand', root, split, mano_dir=mano_dir)
  gt_xyz, gt_verts = freihand.read_gt(root, split)
  n = min(limit, len(ds)) if limit else len(ds)
  cfg = augment_config(config)
  xyz, verts, rows = [], [], []
  for start in range(0, n, chunk):
    exs = [ds[i] for i in range(start, min(start + chunk, n))]
    pred = predict_batch(eval_batch(exs, cfg, models, None))
    v = np.asarray(pred['verts'], np.float64)[:, 0]
    verts.append(v)
    xyz.append(freihand.mesh_joints(models[0], v))
    rows += [int(e['sample_id']) for e in exs]
  res = freihand.score(np.concatenate(xyz), np.concatenate(verts), gt_xyz[rows], gt_verts[rows])
  meta = {'dataset': 'freihand', 'split': split, 'root': os.path.abspath(root),
          'checkpoint': os.path.abspath(os.path.join(workdir, 'checkpoints', str(step))),
          'step': int(step), 'mano': mano_dir or 'procedural (NOT MANO)',
          'seconds': round(time.time() - t0, 1)}
  return _write_freihand_report(out_dir, res, n, meta)
