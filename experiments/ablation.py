"""The paper's ablation, in structure, on the synthetic set at CPU size.

    python experiments/ablation.py --out /tmp/a2p_ablation [--steps 600] [--frames 200]

Rows (fixed seed, same data, same schedule; a2p_jax/configs/synthetic_tiny.py):
  baseline (no priors) -> + keypoint prior -> + segmentation -> + depth
  -> + penetration diffusion (stage 2, a2p_jax/configs/diffusion_tiny.py)
and the distillation gap: the full model with the oracle teacher's maps at
inference (F_p) instead of the FAE's (F_fae). Columns: MRRPE, MPJPE,
MPJPE-XY, MPJPE-Z (InterWild protocol, mm), IH-MPJPE and PenVol (cm^3,
interacting frames) on the synthetic test split. Runs resume: rerunning
re-scores finished runs without training them again. Prints a markdown
table and writes OUT/ablation.json.
"""

import argparse
import json
import os
import time

import numpy as np

ROWS = (('baseline (no priors)', ''), ('+ keypoint', 'keypoint'),
        ('+ segmentation', 'keypoint,segmentation'),
        ('+ depth', 'keypoint,segmentation,depth'))
COLS = (('MRRPE', 'mrrpe'), ('MPJPE', 'interwild/mpjpe_all'),
        ('MPJPE-XY', 'interwild/mpjpe_xy_all'), ('MPJPE-Z', 'interwild/mpjpe_z_all'),
        ('IH-MPJPE', 'interwild/mpjpe_ih'), ('PenVol', 'penvol_cm3'))


def table(rows) -> str:
  out = ['| model | ' + ' | '.join(c for c, _ in COLS) + ' |', '|---|' + '---:|' * len(COLS)]
  for name, s in rows:
    out.append(f'| {name} | ' + ' | '.join(
        f'{s[k]:.3f}' if k == 'penvol_cm3' else f'{s[k]:.1f}' for _, k in COLS) + ' |')
  return '\n'.join(out)


def constant_mrrpe(root) -> float:
  """MRRPE (mm) on the test split of predicting the train split's mean
  left-minus-right wrist vector for every image: the score of a model that
  learned nothing about the hands' relative placement."""
  from a2p_jax.data.interhand26m import InterHand26M

  def rel(split):
    ds = InterHand26M(root, split, progress=False)
    out = []
    for i in range(len(ds)):
      ex = ds[i]
      j, v = np.asarray(ex['joints_cam']), np.asarray(ex['joint_valid']).reshape(-1)
      if v[20] > 0 and v[41] > 0:  # InterHand order: wrists last of each hand
        out.append(j[41] - j[20])
    return np.asarray(out)

  train, test = rel('train'), rel('test')
  return float(np.linalg.norm(test - train.mean(0), axis=1).mean())


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--out', required=True)
  ap.add_argument('--steps', type=int, default=600, help='stage-1 steps per row')
  ap.add_argument('--frames', type=int, default=200, help='synthetic frames (x4 cameras)')
  ap.add_argument('--stage2_steps', type=int, default=0, help='0: a2p_jax/configs/diffusion_tiny.py')
  ap.add_argument('--stage2_pairs', type=int, default=0, help='0: a2p_jax/configs/diffusion_tiny.py')
  ap.add_argument('--stage2', default='',
                  help="an existing stage-2 workdir to use instead; 'none': no stage-2 rows")
  ap.add_argument('--rows', default='',
                  help="only these rows, by prior groups, ';'-separated (e.g. "
                  "'keypoint,segmentation,depth': the full model only); default every row")
  ap.add_argument('--stage2_keep', default=None,
                  help="the repair's sampling.keep (default: the stage-2 checkpoint's config)")
  ap.add_argument('--rig', default='dome', choices=('dome', 'capture'),
                  help="synthetic cameras: one dome for every split (default), or each capture "
                  "its own (the runs measured before 2026-12-03 session 4)")
  ap.add_argument('--seed', type=int, default=0,
                  help='training seed of every row (init, data order, dropout); the data set '
                  'is the same for every seed')
  args = ap.parse_args(argv)

  import jax

  from a2p_jax.data.interhand26m import InterHand26M
  from a2p_jax.eval import run as eval_run
  from a2p_jax.teacher import precompute, store as store_lib
  from a2p_jax.train import input as input_lib
  from a2p_jax.train import stage1, stage2
  from a2p_jax.configs import diffusion_tiny, synthetic_tiny

  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  t_start = time.time()

  def config(groups):
    c = synthetic_tiny.get_config()
    c.num_train_steps = args.steps
    c.seed = args.seed
    c.data.synthetic_frames = args.frames
    c.data.synthetic_rig = args.rig
    c.data.priors = 'oracle' if groups else ''
    c.data.prior_groups = groups
    c.progress = False
    return c

  root = input_lib.synthetic_root(config(''), out)
  test_priors = os.path.join(out, 'data', 'priors', 'oracle_test')
  if not store_lib.is_complete(test_priors):
    precompute.precompute('oracle', InterHand26M(root, 'test', progress=False), test_priors,
                          source_info={'dataset': 'synthetic', 'root': root, 'split': 'test'})

  rows = ROWS
  if args.rows:
    wanted = [r.strip() for r in args.rows.split(';')]
    unknown = sorted(set(wanted) - {g for _, g in ROWS})
    if unknown:
      ap.error(f'--rows: unknown rows {unknown}; known: {[g for _, g in ROWS]}')
    rows = [r for r in ROWS if r[1] in wanted]
  results, timings = [], {}
  for name, groups in rows:
    c = config(groups)
    c.data.root = root
    tag = groups.replace(',', '+') or 'none'
    workdir = os.path.join(out, 'stage1_' + tag)
    print(f'\n== {name}: {workdir}', flush=True)
    t0 = time.time()
    stage1.train_and_evaluate(c, workdir)
    timings[name] = time.time() - t0
    # Scores go beside the run, never into it (evaluation only reads a run).
    summ = eval_run.evaluate_checkpoint(workdir, os.path.join(out, 'eval_' + tag), root=root,
                                        split='test')
    results.append((name, summ))
  full = workdir

  w2 = args.stage2
  if w2 == 'none':
    pass
  elif not w2:
    c2 = diffusion_tiny.get_config()
    c2.data.root = root
    c2.progress = False
    c2.seed = args.seed
    if args.stage2_steps:
      c2.num_train_steps = args.stage2_steps
    if args.stage2_pairs:
      c2.data.num_pairs = args.stage2_pairs
    w2 = os.path.join(out, 'stage2')
    t0 = time.time()
    stage2.train_and_evaluate(c2, w2)
    timings['stage 2'] = time.time() - t0
  if w2 != 'none':
    summ = eval_run.evaluate_checkpoint(full, os.path.join(out, 'eval_stage1+2'), root=root,
                                        split='test', stage2=w2,
                                        stage2_sampling=(None if args.stage2_keep is None else
                                                         {'keep': args.stage2_keep}))
    results.append(('+ penetration diffusion' + (f' (keep {args.stage2_keep})'
                                                 if args.stage2_keep else ''), summ))
  summ = eval_run.evaluate_checkpoint(full, os.path.join(out, 'eval_teacher_at_inference'),
                                      root=root, split='test', priors=test_priors)
  results.append(('full, oracle teacher at inference (F_p, not F_fae)', summ))

  text = table(results)
  n = results[0][1]
  print(f'\n# Synthetic ablation ({jax.default_backend()}, {os.cpu_count()} cores): '
        f'{args.frames} frames x 4 cameras, {args.steps} stage-1 steps per row, '
        f'{n["count"]} test images ({n["count_ih"]} interacting), seed {args.seed}; '
        f'{(time.time() - t_start) / 60:.1f} min\n')
  print(text)
  const = constant_mrrpe(root)
  print(f'\nMRRPE of a constant (the train mean left-minus-right wrist vector): {const:.1f} mm')
  with open(os.path.join(out, 'ablation.json'), 'w') as f:
    json.dump({'args': vars(args), 'rows': [{'name': k, **v} for k, v in results],
               'train_seconds': timings, 'constant_mrrpe_mm': const}, f, indent=1, default=float)


if __name__ == '__main__':
  main()
