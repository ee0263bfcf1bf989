"""Preemption and exact resume, end to end on the tiny stage-1 config.

Every case ends with the final train state (model, optimizer) compared bit
for bit with one uninterrupted run: a kill, a SIGTERM or a truncated
checkpoint may cost recomputation, never data or a different result. The
data iterator's position is part of that state (it is checkpointed), so a
resume that replayed or skipped batches would show up as a difference.

- SIGKILL at a random step after a checkpoint exists (train.py in a
  subprocess, asynchronous saves, so the kill can land mid-save), then a
  restart: no unfinished orbax directory is left behind.
- SIGTERM (what pods get before preemption): train.py saves the step it is
  at and exits 0; the restart resumes there.
- A truncated file in the newest checkpoint: the restart says so, resumes
  from the previous checkpoint, moves the broken one to
  checkpoints_unreadable/ and writes that step again.

Restarts run in this process (the `train_and_evaluate` train.py calls);
this module and its subprocesses share one persistent compilation cache.
Both tests are slow-marked (`make test-slow`): a module that trains
compiles the train step first (~100 s of CPU with the uninterrupted run,
over the default suite's budget). The default suite keeps the library-level
fallback tests (tests/test_train_checkpoint.py).
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from a2p_jax.runtime import checkpoint as ckpt_lib
from a2p_jax.train import stage1
from tests import tiny_training as tt

STEPS = 8  # checkpoints every 2 steps (the 'test' variant), the 3 newest kept


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  """One persistent compilation cache for this module and the train.py
  subprocesses it starts: the training program compiles once."""
  d = str(tmp_path_factory.mktemp('jax_cache'))
  with tt.persistent_cache(d):
    yield d


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return tt.tiny_data(tmp_path_factory)


@pytest.fixture(scope='module')
def reference(data, cache_dir, tmp_path_factory):
  """The uninterrupted run: its workdir and final state (it compiles the
  program into the shared cache)."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  got = stage1.train_and_evaluate(tt.config(data, num_train_steps=STEPS), workdir)
  assert got['step'] == STEPS
  return workdir, tt.state_arrays(got['state'])


def _train_py(data, workdir, cache_dir, **overrides):
  return ([sys.executable, os.path.join(tt.REPO, 'train.py'),
           '--config', os.path.join(tt.REPO, 'a2p_jax', 'configs', 'synthetic_tiny.py') + ':test',
           '--workdir', str(workdir)] +
          tt.overrides_as_flags(data, num_train_steps=STEPS, log_every=1, **overrides))


def _run_and_signal(cmd, env, log, sig, when, timeout=600):
  """Runs `cmd` (stderr to LOG.err), reads its console lines '[step] ...'
  and sends `sig` at the first step for which `when(step)` holds.
  (returncode, stdout lines, step at which the signal was sent or None)."""
  err = open(log + '.err', 'w')
  proc = subprocess.Popen(cmd, cwd=tt.REPO, env=env, stdout=subprocess.PIPE, stderr=err,
                          text=True)
  watchdog = threading.Timer(timeout, proc.kill)
  watchdog.start()
  lines, sent = [], None
  try:
    for line in proc.stdout:
      lines.append(line)
      m = re.match(r'\[(\d+)\] ', line)
      if sent is None and m and when(int(m.group(1))):
        sent = int(m.group(1))
        proc.send_signal(sig)
    proc.wait()
  finally:
    watchdog.cancel()
    err.close()
  return proc.returncode, lines, sent


def _finished_steps(workdir):
  root = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(root) if s.isdigit()) if os.path.isdir(root) else []


def _assert_checkpoints_clean(workdir):
  """Only finished step directories: no orbax temporary (unfinished) write."""
  top, tmp = tt.checkpoint_entries(workdir)
  assert not tmp, f'unfinished checkpoint writes left behind: {tmp}'
  assert all(n.isdigit() for n in top), top


@pytest.mark.slow  # 2 train.py processes + 1 restart: 130 s on the loaded 2-core CPU
def test_sigterm_then_sigkill_then_restart_is_bitwise(data, cache_dir, reference, tmp_path,
                                                      capsys):
  """train.py gets SIGTERM, is restarted, gets SIGKILL, is restarted."""
  seed = random.randrange(10 ** 6)
  rnd = random.Random(seed)
  workdir = str(tmp_path / 'run')
  env = tt.subprocess_env(cache_dir)
  cmd = _train_py(data, workdir, cache_dir, async_checkpoints=True)

  # SIGTERM after a random early step: that step (or the next, if the
  # signal lands after the loop asked) is saved, off the every-2 schedule
  # when odd, and the process exits 0.
  term_at = rnd.randint(1, 3)
  code, lines, sent = _run_and_signal(cmd, env, str(tmp_path / 'term'), signal.SIGTERM,
                                      lambda s: s >= term_at)
  why = f'seed {seed}: SIGTERM at step {term_at}'
  assert sent == term_at and code == 0, (why, code, lines[-3:])
  said = [int(m.group(1)) for m in (re.match(r'SIGTERM: saved step (\d+), exiting', x)
                                    for x in lines) if m]
  assert said and term_at <= said[0] < STEPS - 2, (why, lines[-3:])
  saved = said[0]
  assert _finished_steps(workdir)[-1] == saved, (why, _finished_steps(workdir))
  _assert_checkpoints_clean(workdir)

  # Restart; SIGKILL at a random later step (asynchronous saves: the kill
  # may land in the middle of one).
  kill_at = rnd.randint(saved + 1, STEPS - 1)
  code, lines, killed = _run_and_signal(cmd, env, str(tmp_path / 'kill'), signal.SIGKILL,
                                        lambda s: s >= kill_at)
  why += f', saved {saved}; SIGKILL at step {kill_at}'
  assert f'resumed from step {saved}' in ''.join(lines), (why, lines[:5])
  assert killed == kill_at and code == -signal.SIGKILL, (why, code, lines[-3:])
  left = _finished_steps(workdir)
  capsys.readouterr()

  # Restart to the end: the orbax leftovers of the killed save are gone and
  # the result is the uninterrupted one.
  got = stage1.train_and_evaluate(tt.config(data, num_train_steps=STEPS), workdir)
  out = capsys.readouterr().out
  assert f'resumed from step {left[-1]}' in out, (why, left, out[-2000:])
  assert got['step'] == STEPS
  tt.assert_bitwise_equal(tt.state_arrays(got['state']), reference[1],
                          f'{why}, resumed from {left[-1]}')
  _assert_checkpoints_clean(workdir)


@pytest.mark.slow  # 25 s, plus 72-124 s of module set-up when it runs alone
def test_truncated_newest_checkpoint_resumes_from_previous(data, reference, tmp_path, capsys):
  ref_dir, want = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(ref_dir, workdir)
  assert _finished_steps(workdir) == [STEPS - 4, STEPS - 2, STEPS]
  # Truncate the largest file of the newest train state (the array data).
  newest = os.path.join(workdir, 'checkpoints', str(STEPS))
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(newest, 'state')) for f in fs]
  victim = max(files, key=os.path.getsize)
  with open(victim, 'r+b') as f:
    f.truncate(os.path.getsize(victim) // 2)
  capsys.readouterr()

  got = stage1.train_and_evaluate(tt.config(data, num_train_steps=STEPS), workdir)
  out = capsys.readouterr().out
  assert f'checkpoints/{STEPS} is unreadable' in out, out[-2000:]
  assert f'resumed from step {STEPS - 2}' in out, out[-2000:]
  # The unreadable one is kept aside and its step written again.
  assert os.listdir(os.path.join(workdir, 'checkpoints_unreadable')) == [str(STEPS)]
  tt.assert_bitwise_equal(tt.state_arrays(got['state']), want,
                          f'resumed from step {STEPS - 2} past a truncated step {STEPS}')
  _assert_checkpoints_clean(workdir)
  mngr = ckpt_lib.manager(workdir, async_save=False)
  try:
    step, state, _ = ckpt_lib.restore_exact(mngr, got['state'])
  finally:
    mngr.close()
  assert step == STEPS
  tt.assert_bitwise_equal(tt.state_arrays(state), want, f'rewritten step {STEPS}')
