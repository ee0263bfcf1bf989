"""At what stage-1 relative-root error does a repair start to cost MRRPE?

    python experiments/exit_vs_error.py --root DATA --stage2 STAGE2_RUN --out OUT.json \
        [--dataset synthetic] [--mano_dir DIR] [--split train] [--sigma 10 20 30 50 100]

Ground-truth two-hand fits of a split's interacting frames (clear of each
other), the left hand moved by Gaussian noise of sigma mm per camera axis
(articulation, shape and the right hand kept): a stage 1 whose only error
is the relative root. Among the moved pairs that penetrate, the
relative-root error (MRRPE's quantity, mm) before and after each repair of
the stage-2 run, through the gated repair evaluation uses
(`load_repair`): its own sampling (the guided sample, with its pull-back)
and the least translation out (`direction=least`). A row whose 'after' is
below 'before' is an error level where the repair helps MRRPE; compare
with your stage 1's MRRPE. Works on the synthetic set and on the real
InterHand2.6M release (--dataset interhand26m --mano_dir).
"""

import argparse
import json
import os

import numpy as np

REPAIRS = (('stage-2 sampling', None), ('least exit', {'direction': 'least'}))


def depth_fn(models):
  """Jitted exact penetration depth (m) of parameter batches."""
  import jax
  from a2p_jax.diffusion import guidance, repair
  fn = jax.jit(lambda p: guidance.depth(p, models))
  return lambda p: np.asarray(fn({k: p[k] for k in repair.KEYS}))


def clear_pairs(dataset, models, depth, min_depth: float):
  """Parameters {'pose_6d', 'betas', 'root_cam'} (N, 2, ...) and the
  image's camera ('focal', 'princpt' (N, 2)) of the interacting frames with
  both fits whose hands do not penetrate deeper than min_depth (m)
  (`depth`: a `depth_fn`)."""
  from a2p_jax.diffusion import repair, state
  rows = []
  for i in range(len(dataset)):
    ex = dataset[i]
    mano = ex.get('mano') or {}
    if ex['hand_type'] == 'interacting' and mano.get('right') is not None \
        and mano.get('left') is not None:
      rows.append(dict(state.params_from_mano(mano, models),
                       focal=np.asarray(ex['camera']['focal'], np.float32),
                       princpt=np.asarray(ex['camera']['princpt'], np.float32)))
  if not rows:
    raise ValueError('exit_vs_error: no interacting frame with both hands\' MANO fits')
  gt = {k: np.stack([r[k] for r in rows]) for k in repair.KEYS + ('focal', 'princpt')}
  d = np.concatenate([depth({k: v[lo:lo + 64] for k, v in gt.items()})
                      for lo in range(0, len(rows), 64)])
  ok = d <= min_depth
  return {k: v[ok] for k, v in gt.items()}


def noised(gt, sigma_mm: float, num: int, rng, depth, min_depth: float):
  """Up to `num` pairs of `gt` whose left hand, moved by N(0, sigma^2) per
  axis, penetrates deeper than min_depth (`depth`: a `depth_fn`): (moved
  params, truth params)."""
  n = len(gt['betas'])
  moved, truth = [], []
  for _ in range(20):   # draws until `num` penetrate (few do at small sigma)
    idx = rng.integers(0, n, 4 * num)
    p = {k: v[idx].copy() for k, v in gt.items()}
    p['root_cam'][:, 1] += rng.normal(0.0, sigma_mm / 1000.0, (len(idx), 3)).astype(np.float32)
    pen = depth(p) > min_depth
    moved.append({k: v[pen] for k, v in p.items()})
    truth.append({k: v[idx[pen]] for k, v in gt.items()})
    if sum(len(m['betas']) for m in moved) >= num:
      break
  cat = lambda parts: {k: np.concatenate([q[k] for q in parts])[:num] for k in parts[0]}  # noqa: E731
  return cat(moved), cat(truth)


def rel_error_mm(params, truth):
  """|(left - right wrist) - truth's| per pair, mm."""
  rel = params['root_cam'][:, 1] - params['root_cam'][:, 0]
  return 1000.0 * np.linalg.norm(rel - (truth['root_cam'][:, 1] - truth['root_cam'][:, 0]),
                                 axis=-1)


def run_repair(fn, params, models, batch: int = 16):
  """The gated repair over `params` in batches (one compiled shape), as
  evaluation applies it (`apply_stage2`: each hand's box its projected
  mesh): (repaired params, repaired (N,) bool)."""
  from a2p_jax.arrays import pad_batch
  from a2p_jax.diffusion import repair
  from a2p_jax.inference.stage2 import apply_stage2
  outs, done = [], []
  for lo in range(0, len(params['betas']), batch):
    part = pad_batch({k: v[lo:lo + batch] for k, v in params.items()}, batch)
    m = min(batch, len(params['betas']) - lo)
    pred = dict(part, rel_root=part['root_cam'][:, 1] - part['root_cam'][:, 0])
    fixed, gated = apply_stage2(pred, fn, models, part, seed=lo)
    outs.append({k: fixed[k][:m] for k in repair.KEYS})
    done.append(gated[:m])
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, np.concatenate(done)


def table(rows) -> str:
  out = ['| sigma mm / axis | pairs | error before | ' +
         ' | '.join(f'{name}: after (change), better, repaired, median move'
                    for name, _ in REPAIRS) + ' |',
         '|---:|---:|---:|' + '---|' * len(REPAIRS)]
  for r in rows:
    cells = [f"{r[name]['after']:.1f} ({r[name]['after'] - r['before']:+.1f}), "
             f"{100 * r[name]['better']:.0f}%, {r[name]['repaired']}, "
             f"{r[name]['move']:.1f}" for name, _ in REPAIRS]
    out.append(f"| {r['sigma']:g} | {r['pairs']} | {r['before']:.1f} | " + ' | '.join(cells)
               + ' |')
  return '\n'.join(out)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--root', required=True, help='data set root (InterHand2.6M layout)')
  ap.add_argument('--stage2', required=True, help='a stage-2 training run')
  ap.add_argument('--out', required=True, help='results json (written)')
  ap.add_argument('--dataset', default='synthetic', choices=('synthetic', 'interhand26m'))
  ap.add_argument('--mano_dir', default=None)
  ap.add_argument('--split', default='train')
  ap.add_argument('--sigma', type=float, nargs='+', default=[10, 20, 30, 50, 100])
  ap.add_argument('--num', type=int, default=48, help='penetrating pairs per sigma')
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args(argv)
  if os.path.isdir(args.out):
    raise SystemExit(f'--out {args.out}: is a folder; give a .json file path')

  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.eval.run import dataset
  from a2p_jax.inference.stage2 import load_repair
  models = load_hand_models(args.mano_dir)
  fns = [(name, load_repair(args.stage2, mano_dir=args.mano_dir, sampling=s)) for name, s in
         REPAIRS]
  min_depth = float(fns[0][1][1].gate.get('min_depth_mm', 0.0)) / 1000.0
  depth = depth_fn(models)   # one jitted exact test for every step below
  gt = clear_pairs(dataset(args.dataset, args.root, args.split, mano_dir=args.mano_dir),
                   models, depth, min_depth)
  print(f'{len(gt["betas"])} interacting ground-truth pairs clear of each other', flush=True)
  rng = np.random.default_rng(args.seed)
  rows = []
  for sigma in args.sigma:
    moved, truth = noised(gt, sigma, args.num, rng, depth, min_depth)
    before = rel_error_mm(moved, truth)
    row = {'sigma': sigma, 'pairs': len(before), 'before': float(before.mean())}
    for name, (fn, _) in fns:
      fixed, done = run_repair(fn, moved, models)
      after = rel_error_mm(fixed, truth)
      move = 1000.0 * np.linalg.norm(fixed['root_cam'][:, 1] - moved['root_cam'][:, 1], axis=-1)
      row[name] = {'after': float(after.mean()), 'better': float(np.mean(after < before - 1e-6)),
                   'repaired': int(done.sum()),
                   'move': float(np.median(move[done])) if done.any() else 0.0}
    rows.append(row)
    print(table(rows[-1:]).splitlines()[-1], flush=True)
  print('\n' + table(rows))
  with open(args.out, 'w') as f:
    json.dump({'args': vars(args), 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
