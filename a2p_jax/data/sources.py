"""The one place that maps a data set's name to its reader.

    ds = open_source('interhand26m', '/data/InterHand2.6M', 'test',
                     mano_dir='/data/mano', subset='/data/aid_human_annot_test.txt')

Every reader is a random-access sequence of camera-space examples with an
`annot_ids` property. The synthetic set is written in the InterHand2.6M
layout, so the same reader reads it.
"""

import inspect
import os
from typing import Optional

from a2p_jax.data.coco_wholebody import COCOWholeBody
from a2p_jax.data.freihand import FreiHAND
from a2p_jax.data.hic import HIC
from a2p_jax.data.ho3d import HO3D
from a2p_jax.data.interhand26m import InterHand26M
from a2p_jax.data.reinterhand import ReInterHand

READERS = {'interhand26m': InterHand26M, 'synthetic': InterHand26M, 'hic': HIC, 'ho3d': HO3D,
           'freihand': FreiHAND, 'coco_wholebody': COCOWholeBody, 'reinterhand': ReInterHand}


def open_source(name: str, root: str, split: str, *, mano_dir: Optional[str] = None,
                **options):
  """The reader of data set `name` over `root` for `split`.

  mano_dir: MANO_RIGHT.pkl / MANO_LEFT.pkl (None: the procedural hand, NOT
  MANO). options go to the reader as they are (InterHand26M: subset, strict,
  check_images, cache, cache_dir, progress; HIC: strict; the others: strict,
  cache, cache_dir, progress; FreiHAND also versions, check_images); one it
  does not take is a TypeError naming it. Splits: interhand26m / synthetic
  train, val, test; hic test; reinterhand train, test; coco_wholebody train,
  val; freihand training, evaluation; ho3d train, evaluation.
  """
  if name not in READERS:
    raise ValueError(f'unknown data set {name!r}; known: {", ".join(sorted(READERS))}')
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f'{name} root {root!r} is not a directory')
  reader = READERS[name]
  takes = set(inspect.signature(reader).parameters) - {'root', 'split', 'mano_dir'}
  unknown = sorted(set(options) - takes)
  if unknown:
    raise TypeError(f'{name}: unknown option(s) {", ".join(unknown)}; '
                    f'{reader.__name__} takes {", ".join(sorted(takes))}')
  return reader(root, split, mano_dir=mano_dir, **options)
