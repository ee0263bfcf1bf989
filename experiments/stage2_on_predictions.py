"""Stage 2 on real stage-1 outputs, trained with and without stage-1 prediction pairs.

    python experiments/stage2_on_predictions.py --ablation /tmp/abl/s0 \
        --eval /tmp/abl/s0 /tmp/abl/s1 --out /tmp/s2pred

Needs finished `experiments/ablation.py` runs (same synthetic set, any
seeds). Steps, each cached in OUT (rerunning resumes):
  1. pairs (ii): the penetrating predictions of the --ablation run's stage-1
     checkpoints (every row at each of --pair_steps: weaker models than the
     final one, as the paper asks) on the train split, with their ground
     truth (a2p_jax.diffusion.pairs.prediction_pairs);
  2. a2p_jax/configs/diffusion_tiny.py trained twice on the same perturbed-ground-
     truth pairs (i): alone, and mixed with pairs (ii)
     (config.data.stage1_fraction of each batch);
  3. each --eval run's full stage-1 model (keypoint+segmentation+depth)
     scored on the test split (InterWild protocol) alone and followed by each
     stage-2 model, with sampling.keep '' (the paper: the diffusion redraws
     everything) and the tiny config's default.
Runs from other seeds than --ablation are the clean test: their stage-1
models never produced a training pair. Prints a markdown table per eval
run and writes OUT/results.json.
"""

import argparse
import json
import os
import time

import numpy as np

ROWS = ('none', 'keypoint', 'keypoint+segmentation', 'keypoint+segmentation+depth')
FULL = 'stage1_keypoint+segmentation+depth'
COLS = (('MRRPE', 'mrrpe', 1), ('MPJPE', 'interwild/mpjpe_all', 1),
        ('IH-MPJPE', 'interwild/mpjpe_ih', 1), ('MPVPE', 'interwild/mpvpe_all', 1),
        ('PenVol', 'penvol_cm3', 3), ('PenDist cm', 'pendist_cm', 3), ('repaired', 'repaired', 0))


def prediction_pairs(ablation: str, steps, out: str) -> str:
  """Pairs (ii) of every row checkpoint of an ablation run (cached per checkpoint)."""
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.data.interhand26m import InterHand26M
  from a2p_jax.diffusion import pairs as pairs_lib
  from a2p_jax.inference.pairs import stage1_pairs
  path = os.path.join(out, 'pairs_stage1_steps_' + '_'.join(map(str, steps)) + '.npz')
  if os.path.exists(path):
    return path
  models = load_hand_models(None)
  ds = InterHand26M(os.path.join(ablation, 'data', 'synthetic'), 'train', progress=False)
  parts = [stage1_pairs(os.path.join(ablation, 'stage1_' + row), ds, models,
                        os.path.join(out, 'pairs', f'{row}.npz'), steps=steps,
                        log=lambda m, row=row: print(f'{row}: {m}', flush=True))
           for row in ROWS]
  g = pairs_lib.concat(*[p[0] for p in parts])
  c = pairs_lib.concat(*[p[1] for p in parts])
  pairs_lib.save(path, g, c, source=np.ones(len(g['betas'])))
  return path


def train_stage2(ablation: str, out: str, name: str, seed: int, steps: int, stage1_pairs: str,
                 fraction: float) -> str:
  from a2p_jax.train import stage2
  from a2p_jax.configs import diffusion_tiny
  c = diffusion_tiny.get_config()
  c.data.root = os.path.join(ablation, 'data', 'synthetic')
  c.progress = False
  c.seed = seed
  if steps:
    c.num_train_steps = steps
  # Both models read the same perturbed pairs (built once, into OUT/data).
  c.data.pairs_file = stage2.pairs_path(c, out)
  c.data.stage1_pairs_file = stage1_pairs
  c.data.stage1_fraction = fraction
  workdir = os.path.join(out, name)
  t = time.time()
  stage2.train_and_evaluate(c, workdir)
  print(f'stage 2 {name}: {time.time() - t:.0f} s', flush=True)
  return workdir


def score(run: str, out: str, stage2=None, keep=None) -> dict:
  from a2p_jax.eval import run as eval_run
  path = os.path.join(out, 'report.json')
  if not os.path.exists(path):
    t = time.time()
    eval_run.evaluate_checkpoint(os.path.join(run, FULL), out, split='test', stage2=stage2,
                                 stage2_sampling=None if keep is None else {'keep': keep})
    print(f'scored {out} ({time.time() - t:.0f} s)', flush=True)
  with open(path) as f:
    r = json.load(f)
  return {**r['summary'], 'repaired': r.get('stage2_repaired') or 0}


def table(rows) -> str:
  out = ['| stage 2 | keep | ' + ' | '.join(c for c, _, _ in COLS) + ' |',
         '|---|---|' + '---:|' * len(COLS)]
  for (model, keep), s in rows:
    out.append(f'| {model} | {keep} | ' + ' | '.join(f'{s[k]:.{d}f}' for _, k, d in COLS) + ' |')
  return '\n'.join(out)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--ablation', required=True, help='ablation run whose checkpoints make pairs (ii)')
  ap.add_argument('--eval', nargs='+', required=True, help='ablation runs to score')
  ap.add_argument('--out', required=True)
  ap.add_argument('--pair_steps', type=int, nargs='+', default=[200, 600])
  ap.add_argument('--fraction', type=float, default=0.5, help='data.stage1_fraction')
  ap.add_argument('--steps', type=int, default=0, help='stage-2 steps (0: the tiny config)')
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args(argv)
  from a2p_jax.configs import diffusion_tiny

  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  t0 = time.time()
  p2 = prediction_pairs(args.ablation, args.pair_steps, out)
  from a2p_jax.diffusion import pairs as pairs_lib
  n2 = len(pairs_lib.load(p2)[0]['betas'])
  models = {
      'perturbed GT only': train_stage2(args.ablation, out, 'stage2_perturbed', args.seed,
                                        args.steps, '', 0.0),
      f'+ stage-1 pairs ({args.fraction:g})': train_stage2(
          args.ablation, out, f'stage2_mixed_{args.fraction:g}', args.seed, args.steps, p2,
          args.fraction)}
  default_keep = diffusion_tiny.get_config().sampling.keep
  results = {}
  for run in args.eval:
    tag = os.path.basename(os.path.normpath(run))
    rows = [(('none (stage 1 alone)', ''), score(run, os.path.join(out, 'eval', tag, 'stage1')))]
    for name, w2 in models.items():
      for keep in ('', default_keep):
        sub = os.path.join(out, 'eval', tag, os.path.basename(w2) + '_keep_' + (keep or 'none'))
        rows.append(((name, keep or "''"), score(run, sub, w2, keep)))
    results[run] = rows
    print(f'\n# {run} ({FULL}), test split; pairs (ii): {n2} from {args.ablation} steps '
          f'{args.pair_steps}; {(time.time() - t0) / 60:.1f} min\n')
    print(table(rows), flush=True)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump({'args': vars(args), 'num_stage1_pairs': n2,
               'runs': {r: [{'stage2': m, 'keep': k, **s} for (m, k), s in rows]
                        for r, rows in results.items()}}, f, indent=1, default=float)


if __name__ == '__main__':
  main()
