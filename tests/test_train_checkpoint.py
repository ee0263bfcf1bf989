"""Checkpoints: exact round trip (PRNG keys, shardings, data iterator),
fallback past a corrupt newest checkpoint (kept aside, its step writable
again), no silent fresh start. End to end: tests/test_preemption.py."""

import glob
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2p_jax.runtime import checkpoint as ckpt


def _state(seed):
  k = jax.random.key(seed)
  return {'params': {'w': jax.random.normal(k, (4, 3)), 'layers': [jnp.arange(3.0) + seed]},
          'rng': jax.random.fold_in(k, 1), 'count': jnp.asarray(seed, jnp.int32)}


def _iter(seed=0):
  return iter(grain.MapDataset.range(100).shuffle(seed=seed).to_iter_dataset().batch(4))


def _equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    if ckpt._is_prng_key(x):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_keys_and_iterator(tmp_path):
  mngr = ckpt.manager(str(tmp_path), async_save=True)
  it = _iter()
  for _ in range(3):
    next(it)
  ckpt.save(mngr, 3, _state(3), it, {'note': 'x'})
  want_next = next(it)
  mngr.wait_until_finished()
  fresh = _iter()
  step, got, meta = ckpt.restore_latest(ckpt.manager(str(tmp_path)), _state(0), fresh)
  assert step == 3 and meta['note'] == 'x' and meta['step'] == 3
  _equal(got, _state(3))
  np.testing.assert_array_equal(next(fresh), want_next)


def test_no_checkpoint_is_none(tmp_path):
  assert ckpt.restore_latest(ckpt.manager(str(tmp_path)), _state(0)) == (None, None, None)


def _corrupt(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True)
           if os.path.isfile(f)]
  assert files
  for f in files:
    with open(f, 'r+b') as fh:
      fh.truncate(max(os.path.getsize(f) // 3, 1))


def test_corrupt_newest_falls_back_and_says_so(tmp_path, capsys):
  mngr = ckpt.manager(str(tmp_path), async_save=False)
  ckpt.save(mngr, 1, _state(1))
  ckpt.save(mngr, 2, _state(2))
  mngr.close()
  _corrupt(os.path.join(tmp_path, 'checkpoints', '2'))
  step, got, _ = ckpt.restore_latest(ckpt.manager(str(tmp_path)), _state(0))
  assert step == 1
  _equal(got, _state(1))
  out = capsys.readouterr().out
  assert 'checkpoints/2' in out and 'unreadable' in out


def test_unreadable_steps_are_kept_aside_and_can_be_written_again(tmp_path):
  """The resumed run reaches the broken step again: orbax would refuse to
  save over it (StepAlreadyExistsError), so the fallback moves it aside."""
  mngr = ckpt.manager(str(tmp_path), async_save=False)
  for step in (1, 2, 3):
    ckpt.save(mngr, step, _state(step))
  mngr.close()
  for step in (2, 3):
    _corrupt(os.path.join(tmp_path, 'checkpoints', str(step)))
  mngr = ckpt.manager(str(tmp_path), async_save=False)
  step, _, _ = ckpt.restore_latest(mngr, _state(0))
  assert step == 1
  assert sorted(os.listdir(tmp_path / 'checkpoints_unreadable')) == ['2', '3']
  ckpt.save(mngr, 2, _state(5))
  assert ckpt.restore_exact(mngr, _state(0), 2)[0] == 2
  _equal(ckpt.restore_exact(mngr, _state(0), 2)[1], _state(5))
  mngr.close()


def test_all_corrupt_is_an_error_not_a_fresh_start(tmp_path):
  mngr = ckpt.manager(str(tmp_path), async_save=False)
  ckpt.save(mngr, 1, _state(1))
  mngr.close()
  _corrupt(os.path.join(tmp_path, 'checkpoints', '1'))
  with pytest.raises(ckpt.CheckpointError, match='could be restored'):
    ckpt.restore_latest(ckpt.manager(str(tmp_path)), _state(0))


def test_a_step_another_process_cannot_read_is_skipped_by_all(tmp_path, monkeypatch, capsys):
  """Multi-host: every process resumes from the same step. Here the newest
  checkpoint reads fine locally but another process reports it unreadable
  (the agreement is faked; the agreement itself runs for real, two
  processes, in test_all_processes_agree)."""
  mngr = ckpt.manager(str(tmp_path), async_save=False)
  for step in (1, 2):
    ckpt.save(mngr, step, _state(step))
  mngr.close()
  votes = []

  def others_fail_newest(name, ok):
    votes.append(ok)
    return ok and len(votes) > 1  # the first step asked about (2) fails elsewhere

  monkeypatch.setattr(ckpt, 'all_processes', others_fail_newest)
  step, got, _ = ckpt.restore_latest(ckpt.manager(str(tmp_path)), _state(0))
  assert step == 1 and votes == [True, True]
  _equal(got, _state(1))
  assert 'unreadable on another process' in capsys.readouterr().out
  assert os.listdir(tmp_path / 'checkpoints_unreadable') == ['2']


_AGREE = """
import sys, jax
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from a2p_jax.runtime.sharding import all_processes
pid = jax.process_index()
print([all_processes('t', True), all_processes('t', pid == 0), all_processes('t', pid == 1),
       all_processes('u', True)], flush=True)
"""


def test_all_processes_agree(tmp_path):
  """sharding.all_processes over two real processes (127.0.0.1): True only
  when every process says so, the same answer everywhere."""
  import subprocess
  import sys

  from tests import tiny_training as tt
  port = tt.free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, '-c', _AGREE, f'127.0.0.1:{port}', str(i)],
                            cwd=tt.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == '[True, False, False, True]'


def test_keep_period_keeps_weaker_checkpoints(tmp_path):
  """max_to_keep 2 with keep_period 4: steps 4 and 8 survive beside the two
  newest (stage 2's pairs (ii) come from such weaker checkpoints), and
  checkpoint_steps lists what is on disk."""
  mngr = ckpt.manager(str(tmp_path), max_to_keep=2, async_save=False, keep_period=4)
  for step in range(1, 11):
    ckpt.save(mngr, step, _state(step), None, {})
  mngr.wait_until_finished()
  assert ckpt.checkpoint_steps(str(tmp_path)) == [4, 8, 9, 10]
