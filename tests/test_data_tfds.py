"""TFDS builders write array_record without TensorFlow and read back exactly."""

import subprocess
import sys

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from a2p_jax.data import pipeline, synthetic, tfds_builders
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import InterHand26M


def _fake_examples(tmp_path, n=5):
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    path = tmp_path / f'image{i}.jpg'
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), np.uint8)).save(path, quality=90)
    joints = rng.normal(0, 30, (42, 3)) + [0, 0, 600]
    out.append({'image_path': str(path), 'annot_id': 100 + i, 'image_id': i,
                'joints_cam': joints, 'joint_valid': np.ones(42), 'hand_type': 'interacting',
                'hand_type_valid': 1, 'bbox': np.array([1.0, 2.0, 30.0, 40.0]),
                'camera': {'focal': np.array([500.0, 500.0]), 'princpt': np.array([24.0, 32.0])},
                'mano': {'right': {'pose': rng.normal(size=48), 'shape': rng.normal(size=10),
                                   'trans': rng.normal(size=3)}, 'left': None}})
  return out


class FakeHands(tfds_builders._ReaderBuilder):
  SPLITS = ('test',)
  EXAMPLES = []

  def _reader(self, root, split):
    return self.EXAMPLES


def test_build_and_read_back_without_tensorflow(tmp_path):
  examples = _fake_examples(tmp_path)
  FakeHands.EXAMPLES = examples
  builder = FakeHands(data_dir=str(tmp_path / 'tfds'), file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))
  source = tfds_builders._Decoded(builder.as_data_source(split='test'))
  assert len(source) == len(examples)
  by_id = {source[i]['annot_id']: source[i] for i in range(len(source))}
  for ex in examples:
    got = by_id[ex['annot_id']]
    raw = open(ex['image_path'], 'rb').read()
    np.testing.assert_array_equal(got['image'], np.asarray(Image.open(ex['image_path'])))
    np.testing.assert_allclose(got['joints_cam'], ex['joints_cam'], rtol=1e-6)
    np.testing.assert_allclose(got['mano']['right']['pose'], ex['mano']['right']['pose'],
                               rtol=1e-6)
    assert got['mano']['left'] is None and got['hand_type'] == 'interacting'
    assert len(raw) > 0
  # Without an undecoded twin, annot_ids reads the decoded records.
  np.testing.assert_array_equal(source.annot_ids,
                                [source[i]['annot_id'] for i in range(len(source))])
  assert sorted(source.annot_ids) == [ex['annot_id'] for ex in examples]
  assert 'tensorflow' not in sys.modules
  # The decoded source feeds the grain pipeline directly.
  ds = pipeline.make_dataset(source, cfg=pipeline.AugmentConfig(input_hw=(32, 32)),
                             models=load_hand_models(), batch_size=2, seed=0,
                             training=True)
  batch = next(iter(ds))
  assert batch['image'].shape == (2, 32, 32, 3)


def test_synthetic_end_to_end_tfds_matches_reader(tmp_path):
  """synthetic generator -> TFDS build -> per-process sources -> pipeline:
  the array_record examples equal the reader's, the process shares are
  disjoint and equal-sized, and evaluation batches are identical."""
  root = str(tmp_path / 'syn')
  synthetic.generate(root, synthetic.Options(num_frames=5, seed=1, num_cameras=2,
                                             image_size=(64, 48)), progress=False)
  data_dir = str(tmp_path / 'tfds')
  # The documented CLI (`python -m` runs the module as __main__).
  run = subprocess.run([sys.executable, '-m', 'a2p_jax.data.tfds_builders', '--dataset',
                        'synthetic', '--manual_dir', root, '--data_dir', data_dir],
                       capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'synthetic/train:' in run.stdout
  reader = InterHand26M(root, 'train', progress=False, cache=False)
  source = tfds_builders.data_source('synthetic', 'train', data_dir)
  assert len(source) == len(reader)
  by_id = {reader[i]['annot_id']: reader[i] for i in range(len(reader))}
  for i in range(len(source)):
    got = source[i]
    want = by_id[got['annot_id']]
    np.testing.assert_array_equal(got['image'], np.asarray(Image.open(want['image_path'])))
    np.testing.assert_allclose(got['joints_cam'], want['joints_cam'], rtol=1e-6)
    for side in ('right', 'left'):
      if want['mano'][side] is None:
        assert got['mano'][side] is None
      else:
        np.testing.assert_allclose(got['mano'][side]['trans'], want['mano'][side]['trans'],
                                   rtol=1e-6)
  shares = [tfds_builders.data_source('synthetic', 'train', data_dir, per_process=True,
                                      process_index=k, process_count=2) for k in range(2)]
  ids = [{s[i]['annot_id'] for i in range(len(s))} for s in shares]
  assert len(shares[0]) == len(shares[1]) == len(source) // 2
  assert not ids[0] & ids[1]
  # annot_ids read with the images left encoded, in example order.
  for s in [source] + shares:
    assert s.annot_ids.dtype == np.int64
    np.testing.assert_array_equal(s.annot_ids, [s[i]['annot_id'] for i in range(len(s))])
  assert 'tensorflow' not in sys.modules
  # Same examples in the same order -> identical evaluation batches.
  models = load_hand_models()
  cfg = pipeline.AugmentConfig(input_hw=(32, 32))
  order = sorted(range(len(source)), key=lambda i: source[i]['annot_id'])
  ordered_reader = [by_id[source[i]['annot_id']] for i in order]
  ordered_tfds = [source[i] for i in order]
  a = next(iter(pipeline.make_dataset(ordered_reader, cfg=cfg, models=models, batch_size=4,
                                      seed=0, training=False)))
  b = next(iter(pipeline.make_dataset(ordered_tfds, cfg=cfg, models=models, batch_size=4,
                                      seed=0, training=False)))
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
