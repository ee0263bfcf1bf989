"""TFDS builders (array_record, images as encoded bytes: no TensorFlow needed).

    python -m a2p_jax.data.tfds_builders --dataset synthetic --manual_dir DIR \
        --data_dir ~/tensorflow_datasets
    python -m a2p_jax.data.tfds_builders --dataset interhand26m \
        --manual_dir /data/InterHand2.6M --mano_dir /data/mano [--subset FILE]
    python -m a2p_jax.data.tfds_builders --dataset hic --manual_dir /data/HIC

`manual_dir` is the data set's own root (the official InterHand2.6M layout,
the HIC folder, or a synthetic set written by `a2p_jax.data.synthetic`);
records are the readers' examples in camera space, JPEG bytes copied as they
are (never re-encoded). Read them back without TensorFlow with
`data_source(...)`, which yields reader-style examples for
`a2p_jax.data.pipeline.make_dataset`.
"""

import argparse
import os
import sys
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from a2p_jax.data.sources import open_source

if __name__ == '__main__':
  # `python -m`: run the package module's main and stop before this copy
  # defines the builders again (TFDS registers builders by name and finds
  # their files through their module's package, which `__main__` lacks).
  from a2p_jax.data.tfds_builders import main as _main
  sys.exit(_main())

_VERSION = tfds.core.Version('1.0.0')


def _features():
  f32 = np.float32
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'annot_id': np.int64,
      'image_id': np.int64,
      'joints_cam': tfds.features.Tensor(shape=(42, 3), dtype=f32),   # mm
      'joint_valid': tfds.features.Tensor(shape=(42,), dtype=f32),
      'hand_type': tfds.features.Text(),
      'hand_type_valid': np.int32,
      'bbox': tfds.features.Tensor(shape=(4,), dtype=f32),
      'focal': tfds.features.Tensor(shape=(2,), dtype=f32),
      'princpt': tfds.features.Tensor(shape=(2,), dtype=f32),
      'mano_pose': tfds.features.Tensor(shape=(2, 48), dtype=f32),    # [right, left]
      'mano_shape': tfds.features.Tensor(shape=(2, 10), dtype=f32),
      'mano_trans': tfds.features.Tensor(shape=(2, 3), dtype=f32),    # m
      'mano_valid': tfds.features.Tensor(shape=(2,), dtype=f32),
  })


def to_record(ex: dict) -> dict:
  """A reader example -> a TFDS record (the JPEG file's bytes, not decoded)."""
  path = ex['image_path']
  try:
    with open(path, 'rb') as fh:
      jpeg = fh.read()
  except OSError as e:
    raise OSError(f'cannot read image {path}: {e.strerror}') from None
  pose = np.zeros((2, 48), np.float32)
  shape = np.zeros((2, 10), np.float32)
  trans = np.zeros((2, 3), np.float32)
  valid = np.zeros(2, np.float32)
  for k, side in enumerate(('right', 'left')):
    fit = (ex.get('mano') or {}).get(side)
    if fit is not None:
      pose[k], shape[k], trans[k], valid[k] = fit['pose'], fit['shape'], fit['trans'], 1
  return {
      'image': jpeg,
      'annot_id': int(ex.get('annot_id', -1)),
      'image_id': int(ex.get('image_id', -1)),
      'joints_cam': np.asarray(ex['joints_cam'], np.float32).reshape(42, 3),
      'joint_valid': np.asarray(ex['joint_valid'], np.float32).reshape(42),
      'hand_type': str(ex['hand_type']),
      'hand_type_valid': int(ex.get('hand_type_valid', 1)),
      'bbox': np.asarray(ex['bbox'], np.float32).reshape(4),
      'focal': np.asarray(ex['camera']['focal'], np.float32).reshape(2),
      'princpt': np.asarray(ex['camera']['princpt'], np.float32).reshape(2),
      'mano_pose': pose, 'mano_shape': shape, 'mano_trans': trans, 'mano_valid': valid,
  }


def from_record(rec: dict) -> dict:
  """A decoded TFDS record -> a reader-style example for the pipeline."""
  hand_type = rec['hand_type']
  if isinstance(hand_type, bytes):
    hand_type = hand_type.decode()
  mano = {}
  for k, side in enumerate(('right', 'left')):
    mano[side] = None if rec['mano_valid'][k] < 0.5 else {
        'pose': rec['mano_pose'][k], 'shape': rec['mano_shape'][k],
        'trans': rec['mano_trans'][k]}
  return {
      'image': rec['image'], 'annot_id': int(rec['annot_id']),
      'image_id': int(rec['image_id']), 'joints_cam': rec['joints_cam'],
      'joint_valid': rec['joint_valid'], 'hand_type': hand_type,
      'hand_type_valid': int(rec['hand_type_valid']), 'bbox': rec['bbox'],
      'camera': {'focal': rec['focal'], 'princpt': rec['princpt']}, 'mano': mano,
  }


class _ReaderBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared builder: the reader is `open_source(<builder name>, ...)`;
  subclasses say which splits."""

  VERSION = _VERSION
  SPLITS = ('train', 'val', 'test')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Pass the data set\'s root folder as --manual_dir.'

  def __init__(self, *, mano_dir: Optional[str] = None, subset: Optional[str] = None,
               **kwargs):
    self._mano_dir = mano_dir
    self._subset = subset
    super().__init__(**kwargs)

  def _info(self):
    return self.dataset_info_from_configs(features=_features(),
                                          supervised_keys=None)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(root, split) for split in self.SPLITS
            if self._has_split(root, split)}

  def _has_split(self, root, split):
    return True

  def _reader(self, root, split):
    options = {} if self._subset is None else {'subset': self._subset}
    return open_source(self.name, root, split, mano_dir=self._mano_dir, **options)

  def _generate_examples(self, root, split):
    reader = self._reader(root, split)
    for i in range(len(reader)):
      ex = reader[i]
      yield int(ex.get('annot_id', i)), to_record(ex)


class Synthetic(_ReaderBuilder):
  """The synthetic two-hand set (InterHand2.6M layout) from a2p_jax.data.synthetic."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Generate it: python -m a2p_jax.data.synthetic '
                                  '--out DIR --num_frames N, then pass --manual_dir DIR.')

  def _has_split(self, root, split):
    return os.path.isdir(os.path.join(root, 'annotations', split))


class Interhand26m(Synthetic):
  """InterHand2.6M v1.0 from its official root (`manual_dir`); needs MANO."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Download InterHand2.6M (images and annotations) '
                                  'and pass its root as --manual_dir, MANO as --mano_dir.')


class Hic(_ReaderBuilder):
  """HIC (test split only) from its folder with HIC.json."""

  SPLITS = ('test',)
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Download HIC and pass its folder as --manual_dir, '
                                  'MANO as --mano_dir.')


BUILDERS = {'synthetic': Synthetic, 'interhand26m': Interhand26m, 'hic': Hic}


def build(dataset: str, manual_dir: str, data_dir: str, *, mano_dir=None, subset=None):
  """Builds (or reuses) the array_record files; returns the builder."""
  if dataset not in BUILDERS:
    raise ValueError(f'dataset must be one of {sorted(BUILDERS)}, got {dataset!r}')
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'manual_dir {manual_dir!r} is not a directory')
  builder = BUILDERS[dataset](data_dir=data_dir, file_format='array_record',
                              mano_dir=mano_dir, subset=subset)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


class _Decoded:
  """Random-access view of an array_record split as reader-style examples.

  undecoded: the same split with the images left encoded (`annot_ids` reads
  every record: decoding every image for it would cost an epoch)."""

  def __init__(self, source, undecoded=None):
    self._source = source
    self._undecoded = source if undecoded is None else undecoded

  def __len__(self):
    return len(self._source)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids in example order."""
    return np.asarray([self._undecoded[i]['annot_id'] for i in range(len(self))], np.int64)

  def __getitem__(self, i):
    return from_record(self._source[i])


def data_source(dataset: str, split: str, data_dir: str, *, per_process: bool = False,
                process_index: Optional[int] = None, process_count: Optional[int] = None):
  """Reader-style random-access source over a built split (no TensorFlow).

  `per_process=True`: only this process's even share of the split (equal
  sizes, remainder dropped), via `tfds.split_for_jax_process`; the index and
  count default to `jax.process_index()`/`jax.process_count()`. Pass such a
  source to `pipeline.make_dataset` with its default process_count=1.
  """
  if dataset not in BUILDERS:
    raise ValueError(f'dataset must be one of {sorted(BUILDERS)}, got {dataset!r}')
  builder = BUILDERS[dataset](data_dir=data_dir, file_format='array_record')
  if per_process:
    split = tfds.split_for_jax_process(split, process_index=process_index,
                                       process_count=process_count, drop_remainder=True)
  return _Decoded(builder.as_data_source(split=split), builder.as_data_source(
      split=split, decoders={'image': tfds.decode.SkipDecoding()}))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--dataset', required=True, choices=sorted(BUILDERS))
  ap.add_argument('--manual_dir', required=True)
  ap.add_argument('--data_dir', default=os.path.expanduser('~/tensorflow_datasets'))
  ap.add_argument('--mano_dir', default=None)
  ap.add_argument('--subset', default=None)
  args = ap.parse_args(argv)
  builder = build(args.dataset, args.manual_dir, args.data_dir, mano_dir=args.mano_dir,
                  subset=args.subset)
  for split, info in builder.info.splits.items():
    print(f'{args.dataset}/{split}: {info.num_examples} examples')
  print(f'written under {builder.data_dir}')
