"""Multi-host stage-1 training for real, on one machine: two processes
joined by jax.distributed over 127.0.0.1 (CPU collectives over gloo), each
with its own fake devices and its own shard of the tiny synthetic set, on
one mesh over all devices; against one process holding as many devices,
fed the same global batches (tests/multihost_probe.py runs both sides).

The two-process job is preempted once: process 1 alone gets SIGTERM (as
one host of a pod would), both processes agree on a step, save it and exit
0; relaunched, they resume and finish. Checked: both processes end with
identical parameters and optimizer state; they equal the uninterrupted
single-process run; only process 0 writes metrics; the checkpoint holds
every process's part and restores in a single process.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from a2p_jax.runtime import checkpoint as ckpt_lib
from tests import tiny_training as tt

STEPS = 6  # checkpoints every 2 steps, plus the SIGTERM one
PROBE = os.path.join(tt.REPO, 'tests', 'multihost_probe.py')


def _start(args, env, log):
  with open(log + '.out', 'w') as out, open(log + '.err', 'w') as err:
    return subprocess.Popen([sys.executable, PROBE] + args, cwd=tt.REPO, env=env,
                            stdout=out, stderr=err)


def _wait(procs, deadline):
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.monotonic(), 1))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    raise


def _read(log):
  with open(log + '.out') as f, open(log + '.err') as g:
    return f.read(), g.read()


def _spec(path, **spec):
  with open(path, 'w') as f:
    json.dump(spec, f)
  return str(path)


def _workers(tmp_path, common, workdir, tag, env):
  spec = _spec(tmp_path / f'{tag}.json', **common, coordinator=f'127.0.0.1:{tt.free_port()}',
               workdir=workdir, out=str(tmp_path / f'state_{tag}'))
  logs = [str(tmp_path / f'{tag}_process{i}') for i in range(2)]
  return [_start(['worker', spec, str(i)], env, logs[i]) for i in range(2)], logs


def _last_json(out):
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow  # 8-11 min each on the loaded 2-core CPU: 5 processes start, 3 compile
@pytest.mark.parametrize('devices_per_process', [2, 1])
def test_two_processes_match_one(devices_per_process, tmp_path_factory, tmp_path):
  data = tt.tiny_data(tmp_path_factory)
  cache = str(tmp_path / 'jax_cache')
  n_dev = 2 * devices_per_process
  common = {'root': data['root'], 'priors': data['priors'], 'steps': STEPS, 'num_processes': 2}
  workdir = str(tmp_path / 'multihost')
  deadline = time.monotonic() + 1800

  # Launch 1 (preempted) and the single-process reference, side by side.
  worker_env = tt.subprocess_env(cache, devices=devices_per_process)
  procs, logs1 = _workers(tmp_path, common, workdir, 'launch1', worker_env)
  ref_log = str(tmp_path / 'single_process')
  ref = _start(['reference', _spec(tmp_path / 'one.json', **common, coordinator='',
                                   workdir=str(tmp_path / 'single'),
                                   out=str(tmp_path / 'state_one'))],
               tt.subprocess_env(cache, devices=n_dev), ref_log)
  while not re.search(r'^\[1\] ', _read(logs1[0])[0], re.M):
    assert procs[0].poll() is None and procs[1].poll() is None, _read(logs1[0])[1][-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)
  _wait(procs + [ref], deadline)
  outs1 = [_read(log) for log in logs1]
  for p, (_, err) in zip(procs + [ref], outs1 + [_read(ref_log)]):
    assert p.returncode == 0, err[-3000:]
  stopped = [_last_json(out)['step'] for out, _ in outs1]
  said = re.findall(r'SIGTERM: saved step (\d+)', outs1[0][0])
  assert stopped[0] == stopped[1] == int(said[0]) and 1 < stopped[0] < STEPS, (stopped, said)

  # Launch 2: both resume from the agreed step and finish.
  procs, logs2 = _workers(tmp_path, common, workdir, 'launch2', worker_env)
  _wait(procs, deadline)
  outs2 = [_read(log) for log in logs2]
  for p, (_, err) in zip(procs, outs2):
    assert p.returncode == 0, err[-3000:]
  assert f'resumed from step {stopped[0]}' in outs2[0][0]
  info = [_last_json(out) for out, _ in outs2] + [_last_json(_read(ref_log)[0])]
  assert [(i['process_index'], i['process_count'], i['devices'], i['local_devices'])
          for i in info] == [(0, 2, n_dev, devices_per_process),
                             (1, 2, n_dev, devices_per_process), (0, 1, n_dev, n_dev)]
  assert all(i['step'] == STEPS and i['traces'] == 1 for i in info)

  states = [dict(np.load(i['out'])) for i in info]
  # (a) Both processes hold the same replicated state, bit for bit.
  tt.assert_bitwise_equal(states[1], states[0], 'process 1 vs process 0')
  # (b) Equal to one process on the same global batches. With one device
  # per process every cross-device sum has 2 terms, whose order does not
  # matter: bitwise. With two, the gradient and batch-norm reductions add 4
  # per-device partials in a different order across processes (gloo) than
  # within one (measured: at most 2.4e-7 apart after 4 steps). 1e-6 is far
  # below what a wrong batch or a missing reduction moves: Adam moves every
  # parameter by ~lr = 5e-5..2.5e-4 per step here.
  if devices_per_process == 1:
    tt.assert_bitwise_equal(states[0], states[2], 'two processes vs one')
  else:
    for k, want in states[2].items():
      np.testing.assert_allclose(states[0][k], want, rtol=0, atol=1e-6, err_msg=k)

  # (c) Metrics from process 0 only: console lines, one event file a launch.
  for outs in (outs1, outs2):
    assert re.search(r'^\[\d+\] ', outs[0][0], re.M) and 'parameters:' in outs[0][0]
    assert not re.search(r'^\[\d+\] ', outs[1][0], re.M), outs[1][0][-2000:]
    assert 'parameters:' not in outs[1][0] and 'SIGTERM' not in outs[1][0]
  events = os.listdir(os.path.join(workdir, 'tb'))
  assert len(events) == 2 and all(e.startswith('events.out.tfevents') for e in events), events
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'tb']

  # The checkpoint is complete (every process's data iterator, no
  # unfinished writes) and one process restores it exactly.
  top, tmp = tt.checkpoint_entries(workdir)
  assert not tmp and top[-1] == str(STEPS) and str(stopped[0]) in top, (top, tmp)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints', str(STEPS), 'data'))) == [
      'commit_success.txt', 'process_0-of-2.json', 'process_1-of-2.json']
  from a2p_jax.runtime import sharding as shard_lib
  from a2p_jax.train import stage1
  channels = ckpt_lib.read_meta(workdir)[1]['prior_channels']
  _, like, _, _ = stage1.create_train_state(tt.config(data), channels, 1, shard_lib.make_mesh(1))
  mngr = ckpt_lib.manager(workdir, async_save=False)
  try:
    step, restored, meta = ckpt_lib.restore_exact(mngr, like)
  finally:
    mngr.close()
  assert step == STEPS and meta['step'] == STEPS
  tt.assert_bitwise_equal(tt.state_arrays(restored), states[0], 'restored vs process 0')
