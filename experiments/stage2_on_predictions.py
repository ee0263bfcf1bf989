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
     scored on the test split (InterWild protocol; PenVol, PenDist and
     contact kept on interacting frames) alone and followed by: guidance
     only (the perturbed model keeping all of X_c), each stage-2 model
     (the tiny config's sampling), the mixed one with the pull-back,
     and the least translation out (sampling.direction 'least');
     with each repair's latency (batches of 16 and one penetrating image).
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


def prediction_pairs(ablation: str, steps, out: str, rows=ROWS) -> str:
  """Pairs (ii) of the `rows`' checkpoints of an ablation run (cached per checkpoint)."""
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.data.interhand26m import InterHand26M
  from a2p_jax.diffusion import pairs as pairs_lib
  from a2p_jax.inference.pairs import stage1_pairs
  tag = '' if tuple(rows) == ROWS else '_' + '_'.join(r.replace('+', '-') for r in rows)
  path = os.path.join(out, 'pairs_stage1_steps_' + '_'.join(map(str, steps)) + tag + '.npz')
  if os.path.exists(path):
    return path
  models = load_hand_models(None)
  ds = InterHand26M(os.path.join(ablation, 'data', 'synthetic'), 'train', progress=False)
  parts = [stage1_pairs(os.path.join(ablation, 'stage1_' + row), ds, models,
                        os.path.join(out, 'pairs', f'{row}.npz'), steps=steps,
                        log=lambda m, row=row: print(f'{row}: {m}', flush=True))
           for row in rows]
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


def score(run: str, out: str, stage2=None, sampling=None) -> dict:
  from a2p_jax.eval import run as eval_run
  path = os.path.join(out, 'report.json')
  if not os.path.exists(path):
    t = time.time()
    eval_run.evaluate_checkpoint(os.path.join(run, FULL), out, split='test', stage2=stage2,
                                 stage2_sampling=sampling)
    print(f'scored {out} ({time.time() - t:.0f} s)', flush=True)
  with open(path) as f:
    r = json.load(f)
  return {**r['summary'], 'repaired': r.get('stage2_repaired') or 0}


class Latency:
  """Wall time of stage 1 and of each stage-2 repair on one run's test
  images (eval crops), batches of BATCH (every one that fills; warm-up
  first, then the median of REPEATS passes), and of the repair of one
  penetrating image at a time (median over up to 8 gated images)."""
  BATCH, REPEATS = 16, 3

  def __init__(self, run: str):
    from a2p_jax.data.interhand26m import InterHand26M
    from a2p_jax.diffusion import repair as repair_lib
    from a2p_jax.inference.stage1 import augment_config, eval_batch, load_stage1
    config, predict, _, self.models = load_stage1(os.path.join(run, FULL))
    ds = InterHand26M(os.path.join(run, 'data', 'synthetic'), 'test', progress=False)
    cfg = augment_config(config)
    n = len(ds) // self.BATCH * self.BATCH
    self.batches = [eval_batch([ds[i] for i in range(lo, lo + self.BATCH)], cfg, self.models)
                    for lo in range(0, n, self.BATCH)]
    self.stage1_ms = self._time(lambda b: predict(b)['root_cam'])
    self.inputs = []
    for b in self.batches:
      pred = predict(b)
      params = {k: np.asarray(pred[k], np.float32) for k in repair_lib.KEYS}
      boxes = np.asarray(repair_lib.boxes_from_params(params, self.models, b['focal'],
                                                      b['princpt']))
      self.inputs.append((params, boxes))

  def _time(self, fn, items=None):
    import jax
    items = self.batches if items is None else items
    jax.block_until_ready(fn(items[0]))  # compile
    passes = []
    for _ in range(self.REPEATS):
      t = time.perf_counter()
      for it in items:
        jax.block_until_ready(fn(it))
      passes.append(time.perf_counter() - t)
    return 1000 * float(np.median(passes)) / (len(items) * self.BATCH)

  def stage2(self, w2: str, sampling: dict) -> dict:
    import jax
    from a2p_jax.inference.stage2 import load_repair
    fn, _ = load_repair(w2, sampling=sampling)
    key = jax.random.key(0)
    ms = self._time(lambda pb: fn(pb[0], pb[1], key)[0], self.inputs)
    gated = [(jax.tree.map(lambda v: v[i:i + 1], p), bx[i:i + 1]) for p, bx in self.inputs
             for i in np.flatnonzero(np.asarray(fn(p, bx, key)[1]['gated']))]
    one = float('nan')
    if gated:
      gated = gated[:8]
      jax.block_until_ready(fn(*gated[0], key)[0])
      times = []
      for p, bx in gated:
        t = time.perf_counter()
        jax.block_until_ready(fn(p, bx, key)[0])
        times.append(1000 * (time.perf_counter() - t))
      one = float(np.median(times))
    return {'ms_per_image': ms, 'ms_one_penetrating': one}


def table(rows, stage1_ms) -> str:
  out = ['| stage 2 | ' + ' | '.join(c for c, _, _ in COLS) +
         ' | contact kept | ms / image (b16) | ms, 1 penetrating (b1) |',
         '|---|' + '---:|' * (len(COLS) + 3)]
  for name, s in rows:
    lat = s.get('latency') or {}
    out.append(f'| {name} | ' + ' | '.join(f'{s[k]:.{d}f}' for _, k, d in COLS) +
               f" | {100 * s['contact_kept']:.0f}% ({s['count_contact']}) | " +
               (f"{stage1_ms:.1f} (stage 1)" if not lat else
                f"+{lat['ms_per_image']:.1f}") + ' | ' +
               (f"{lat['ms_one_penetrating']:.1f}" if lat else '-') + ' |')
  return '\n'.join(out)


ALL_PARTS = 'betas,fingers,roots,rel_trans'


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--ablation', required=True,
                  help='ablation run whose checkpoints make pairs (ii)')
  ap.add_argument('--eval', nargs='+', required=True, help='ablation runs to score')
  ap.add_argument('--out', required=True)
  ap.add_argument('--pair_steps', type=int, nargs='+', default=[200, 600])
  ap.add_argument('--pair_rows', nargs='+', default=list(ROWS), choices=ROWS,
                  help='the --ablation rows whose checkpoints make pairs (ii) (default: all; '
                  'the full row alone for a run made with --rows)')
  ap.add_argument('--fraction', type=float, default=0.5, help='data.stage1_fraction')
  ap.add_argument('--pullback', type=int, default=8, help='sampling.pullback_steps of the last row')
  ap.add_argument('--steps', type=int, default=0, help='stage-2 steps (0: the tiny config)')
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args(argv)

  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  t0 = time.time()
  p2 = prediction_pairs(args.ablation, args.pair_steps, out, args.pair_rows)
  from a2p_jax.diffusion import pairs as pairs_lib
  n2 = len(pairs_lib.load(p2)[0]['betas'])
  perturbed = train_stage2(args.ablation, out, 'stage2_perturbed', args.seed, args.steps, '', 0.0)
  mixed = train_stage2(args.ablation, out, f'stage2_mixed_{args.fraction:g}', args.seed,
                       args.steps, p2, args.fraction)
  # (name, stage-2 workdir, sampling overrides); the tiny config keeps betas,
  # finger and root rotations from X_c; 'guidance only' keeps everything.
  rows = [('guidance only (keep all of X_c)', perturbed,
           {'keep': ALL_PARTS, 'pullback_steps': 0}),
          ('perturbed GT only', perturbed, {'pullback_steps': 0}),
          (f'+ stage-1 pairs (F = {args.fraction:g})', mixed, {'pullback_steps': 0}),
          (f'+ stage-1 pairs + pull-back {args.pullback}', mixed,
           {'pullback_steps': args.pullback}),
          ('least translation out (no denoiser)', mixed, {'direction': 'least'})]
  results = {}
  for run in args.eval:
    tag = os.path.basename(os.path.normpath(run))
    lat = Latency(run)
    got = [('none (stage 1 alone)', score(run, os.path.join(out, 'eval', tag, 'stage1')))]
    for i, (name, w2, sampling) in enumerate(rows):
      s = score(run, os.path.join(out, 'eval', tag, f'row{i + 1}'), w2, sampling)
      s['latency'] = lat.stage2(w2, sampling)
      got.append((name, s))
    results[run] = {'rows': got, 'stage1_ms_per_image': lat.stage1_ms}
    print(f'\n# {run} ({FULL}), test split; pairs (ii): {n2} from {args.ablation} steps '
          f'{args.pair_steps} of rows {args.pair_rows}; {(time.time() - t0) / 60:.1f} min\n')
    print(table(got, lat.stage1_ms), flush=True)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump({'args': vars(args), 'num_stage1_pairs': n2,
               'runs': {r: {'stage1_ms_per_image': v['stage1_ms_per_image'],
                            'rows': [{'stage2': m, **s} for m, s in v['rows']]}
                        for r, v in results.items()}}, f, indent=1, default=float)


if __name__ == '__main__':
  main()
