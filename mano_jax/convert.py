"""Converts an official MANO pickle to mano_jax's .npz (no pickle, no chumpy).

    python -m mano_jax.convert MANO_RIGHT.pkl mano_right.npz [--side right]
        [--fix_left_shapedirs]

The .npz loads with `mano_jax.load` without unpickling anything.
"""

import argparse
import sys

from mano_jax import io


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('src', help='MANO_RIGHT.pkl or MANO_LEFT.pkl')
  ap.add_argument('dst', help='output .npz')
  ap.add_argument('--side', choices=('right', 'left'), default=None)
  ap.add_argument('--tip_ids', default=None,
                  help='5 comma-separated fingertip vertex ids (thumb,index,'
                  'middle,ring,pinky); default: MANO\'s for 778-vertex files')
  ap.add_argument('--fix_left_shapedirs', action='store_true',
                  help="InterHand2.6M's left-hand fix: shapedirs[:, 0, :] *= -1")
  args = ap.parse_args(argv)
  if not args.dst.endswith('.npz'):
    ap.error(f'dst must end in .npz, got {args.dst!r}')
  tips = None
  if args.tip_ids:
    try:
      tips = tuple(int(t) for t in args.tip_ids.split(','))
    except ValueError:
      ap.error(f'--tip_ids must be 5 integers, got {args.tip_ids!r}')
  try:
    model = io.load(args.src, side=args.side, tip_ids=tips,
                    fix_left_shapedirs=args.fix_left_shapedirs)
  except (io.ManoFileError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  io.save_npz(model, args.dst)
  print(f'wrote {args.dst}: {model.side} hand, {model.num_vertices} vertices, '
        f'{model.num_joints} joints, {model.num_betas} betas')
  return 0


if __name__ == '__main__':
  sys.exit(main())
