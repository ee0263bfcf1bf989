"""open_source: one registry from a data set's name to its reader."""

import numpy as np
import pytest

import a2p_jax.data
from a2p_jax.data import open_source
from a2p_jax.data.hic import HIC
from a2p_jax.data.interhand26m import InterHand26M
from a2p_jax.data.sources import READERS
from tests import interhand_fixtures as fx
from tests import test_data_hic


@pytest.fixture(scope='module')
def interhand_root(tmp_path_factory, models):
  root = str(tmp_path_factory.mktemp('ih26m'))
  return root, fx.write(root, models, split='test')


def test_interhand26m_and_synthetic_use_the_interhand_reader(interhand_root):
  root, truth = interhand_root
  for name in ('interhand26m', 'synthetic'):
    ds = open_source(name, root, 'test', cache=False, progress=False)
    assert isinstance(ds, InterHand26M) and len(ds) == len(truth['annotations'])
    np.testing.assert_array_equal(ds.annot_ids, [ds[i]['annot_id'] for i in range(len(ds))])
  assert a2p_jax.data.open_source is open_source


def test_options_pass_through(interhand_root):
  root, truth = interhand_root
  ids = [a['annot_id'] for a in truth['annotations']]
  ds = open_source('interhand26m', root, 'test', subset=[ids[3], ids[1]], strict=True,
                   cache=False, progress=False)
  assert sorted(ds.annot_ids) == sorted([ids[1], ids[3]])
  with pytest.raises(TypeError, match='subsett'):
    open_source('interhand26m', root, 'test', subsett=[ids[1]])


def test_hic_test_split_only(tmp_path, models):
  root, truth = test_data_hic.write_hic(tmp_path, models)
  ds = open_source('hic', root, 'test', strict=True)
  assert isinstance(ds, HIC) and len(ds) == len(truth)
  np.testing.assert_array_equal(ds.annot_ids, [ds[i]['annot_id'] for i in range(len(ds))])
  with pytest.raises(ValueError, match="'train'"):
    open_source('hic', root, 'train')
  with pytest.raises(TypeError, match='subset'):
    open_source('hic', root, 'test', subset=[0])


def test_unknown_name_and_missing_root(tmp_path):
  with pytest.raises(ValueError, match='freihandd') as e:
    open_source('freihandd', str(tmp_path), 'test')
  assert ', '.join(sorted(READERS)) in str(e.value)
  assert {'interhand26m', 'synthetic', 'hic', 'ho3d', 'freihand', 'coco_wholebody',
          'reinterhand'} == set(READERS)
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='nowhere'):
    open_source('interhand26m', missing, 'test')
