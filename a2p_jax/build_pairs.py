"""Builds stage-2 training pairs into a .npz file (a2p_jax.diffusion.pairs).

    # (i) ground truth perturbed until the hands penetrate
    python -m a2p_jax.build_pairs --root DIR --split train --out FILE.npz \
        --num N [--dataset interhand26m] [--mano_dir DIR] [--seed S]
    # (ii) a (weaker) stage-1 checkpoint's penetrating predictions
    python -m a2p_jax.build_pairs --root DIR --split train --out FILE.npz \
        --stage1_workdir STAGE1_WORKDIR [--stage1_step all|S1,S2,..] [--max_examples M]

The .npz holds gt_{pose_6d,betas,root_cam} and cond_{...} (stage-1
parameter convention, a2p_jax/diffusion/state.py) and `source` (0 perturbed
ground truth, 1 stage-1 prediction). The stage-1 workdir is only read;
with several checkpoints each one's pairs are kept beside FILE
(FILE.step<S>.npz) as they are made, so an interrupted run resumes.
"""

import argparse
import os
import sys


from a2p_jax.data import open_source
from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import pairs as pairs_lib
from a2p_jax.inference import pairs as stage1_pairs_lib


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--root', required=True, help='the data set folder (e.g. the synthetic set)')
  p.add_argument('--dataset', default='interhand26m',
                 help='a2p_jax.data.open_source name (the synthetic set: synthetic)')
  p.add_argument('--split', default='train')
  p.add_argument('--out', required=True, help='output .npz')
  p.add_argument('--num', type=int, default=None,
                 help='number of perturbed pairs (required without --stage1_workdir)')
  p.add_argument('--mano_dir', default=None)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--max_examples', type=int, default=None)
  p.add_argument('--min_depth_mm', type=float, default=1.0)
  p.add_argument('--stage1_workdir', default=None,
                 help='instead: pairs of this stage-1 checkpoint\'s penetrating predictions '
                      '(over --max_examples examples; --num is ignored)')
  p.add_argument('--stage1_step', default=None,
                 help="with --stage1_workdir: 'all' (every saved checkpoint: weaker to final, "
                 "as the paper) or comma-separated steps; default the newest")
  args = p.parse_args(argv)
  if args.stage1_workdir is None and args.num is None:
    p.error('--num is required (or --stage1_workdir for stage-1 prediction pairs)')
  if args.stage1_step is not None and args.stage1_workdir is None:
    p.error('--stage1_step needs --stage1_workdir')
  models = load_hand_models(args.mano_dir)
  ds = open_source(args.dataset, args.root, args.split, mano_dir=args.mano_dir)
  if args.stage1_workdir:
    steps = args.stage1_step
    if steps is not None and steps != 'all':
      try:
        steps = [int(x) for x in steps.split(',')]
      except ValueError:
        p.error(f"--stage1_step: 'all' or comma-separated integers, got {args.stage1_step!r}")
    if os.path.exists(args.out):
      p.error(f'--out {args.out} exists (remove it to rebuild)')
    g, _ = stage1_pairs_lib.stage1_pairs(
        args.stage1_workdir, ds, models, args.out, steps=steps, mano_dir=args.mano_dir,
        max_examples=args.max_examples, min_depth_m=args.min_depth_mm / 1000.0, progress=True,
        log=lambda m: print(m, flush=True))
    print(f'wrote {len(g["betas"])} stage-1 prediction pairs to {args.out}', flush=True)
    return 0
  gt = pairs_lib.ground_truth(ds, models, max_examples=args.max_examples)
  print(f'{len(gt["betas"])} non-penetrating two-hand ground truths', flush=True)
  g, c = pairs_lib.perturbed_pairs(gt, models, args.num, seed=args.seed,
                                   min_depth_m=args.min_depth_mm / 1000.0)
  pairs_lib.save(args.out, g, c)
  print(f'wrote {len(g["betas"])} pairs to {args.out}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
