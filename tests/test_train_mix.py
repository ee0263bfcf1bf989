"""Stage 1 on the paper's kind of mix, end to end on CPU: tiny fixtures of
the data sets in their official layouts (the synthetic set standing in for
InterHand2.6M, Re:InterHand, COCO-WholeBody, FreiHAND, HO-3D), mixed by
`config.data.mix`: every source is drawn, each example carries the right
supervision masks, and training steps on the mix are finite."""

import ml_collections
import numpy as np
import pytest

from a2p_jax.data import pipeline
from a2p_jax.data.hands import load_hand_models
from a2p_jax.train import input as input_lib
from a2p_jax.train import stage1
from tests import (coco_wholebody_fixtures, freihand_fixtures, ho3d_fixtures,
                   reinterhand_fixtures, tiny_training)


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
  models = load_hand_models(None)
  base = tmp_path_factory.mktemp('mix')
  out = {'synthetic': tiny_training.tiny_data(tmp_path_factory)['root']}
  out['coco_wholebody'] = str(base / 'coco')
  coco_wholebody_fixtures.write(out['coco_wholebody'], models)
  out['freihand'] = str(base / 'freihand')
  freihand_fixtures.write(out['freihand'], models[0], n_train=2, n_eval=1)
  out['ho3d'] = str(base / 'ho3d')
  ho3d_fixtures.write(out['ho3d'], models[0], 'train')
  out['reinterhand'] = str(base / 'reinterhand')
  reinterhand_fixtures.write(out['reinterhand'], models)
  return out


SPLITS = {'synthetic': ('train', '3d'), 'reinterhand': ('train', '3d'),
          'coco_wholebody': ('train', '2d'),
          'freihand': ('training', '3d'), 'ho3d': ('train', '3d')}


def _config(roots, **overrides):
  mix = ml_collections.ConfigDict({
      name: {'dataset': name, 'root': roots[name], 'split': split, 'group': group}
      for name, (split, group) in SPLITS.items()})
  return tiny_training.config({'root': roots['synthetic'], 'priors': ''},
                              **{'data.mix': mix, **overrides})


def test_every_source_is_drawn_with_its_masks(roots, tmp_path):
  config = _config(roots)
  parts, _, store = input_lib.mixture(config, str(tmp_path))
  assert store is None and sorted(p.name for p in parts) == sorted(SPLITS)
  probs = {p.name: p.probability for p in parts}
  assert probs['coco_wholebody'] == pytest.approx(0.5)   # the 2D group: half of the draws
  models = load_hand_models(None)
  cfg = pipeline.AugmentConfig(input_hw=(64, 64), flip_prob=0.0, rotation_prob=0.0)
  for p in parts:
    ex = pipeline.process(p.source[0], np.random.default_rng(0), cfg=cfg, models=models,
                          training=True)
    assert all(np.all(np.isfinite(v)) for v in ex.values() if isinstance(v, np.ndarray)), p.name
    if p.name == 'coco_wholebody':   # 2D only: no 3D joints, no relative root
      assert not ex['joint_valid'].any() and ex['joints_2d_valid'].any()
      assert ex['rel_root_valid'] == 0
    else:
      assert ex['joint_valid'][:21].all() and ex['joints_2d_valid'][:21].any(), p.name
    if p.name in ('freihand', 'ho3d'):   # one right hand: the left hand's terms are masked
      assert not ex['joint_valid'][21:].any() and not ex['joints_2d_valid'][21:].any()
      assert list(ex['mano_valid']) == [1, 0] and ex['rel_root_valid'] == 0
  # Every source shows up in the first two batches of 8.
  seen = set()

  def spy(name):
    def join(ex):
      seen.add(name)
      return ex
    return join

  ds = pipeline.make_mixed_dataset(
      [pipeline.MixPart(p.source, p.probability, spy(p.name), p.name) for p in parts],
      cfg=cfg, models=models, batch_size=8, seed=0)
  it = iter(ds)
  for _ in range(2):
    next(it)
  assert seen == set(SPLITS)


def test_training_steps_on_the_mix_are_finite(roots, tmp_path):
  got = stage1.train_and_evaluate(_config(roots, num_train_steps=2, log_every=1),
                                  str(tmp_path / 'run'))
  assert got['step'] == 2
  for h in got['history']:
    assert np.isfinite(h['loss']) and np.isfinite(h['loss_joints_2d']), h
