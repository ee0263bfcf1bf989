"""Shared by the multi-host and preemption tests: the tiny stage-1 data set
(made once per pytest session), its config, a persistent compilation cache
that subprocesses share, and helpers to compare train states."""

import contextlib
import os
import socket

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_data(tmp_path_factory) -> dict:
  """The 'test' variant's synthetic set and oracle priors, generated into
  the session's base temp folder on first use and reused after (both are
  rebuilt only when incomplete)."""
  from a2p_jax.train import input as input_lib
  from a2p_jax.configs import synthetic_tiny
  root = str(tmp_path_factory.getbasetemp() / 'tiny_stage1_data')
  config = synthetic_tiny.get_config('test')
  syn = input_lib.synthetic_root(config, root)
  config.data.root = syn
  priors = input_lib.prior_store(config, root, input_lib.source(config, root, 'train'))
  return {'root': syn, 'priors': priors.path if priors is not None else ''}


def config(data, **overrides):
  """synthetic_tiny:test on `data`, with dotted-key overrides."""
  from a2p_jax.configs import synthetic_tiny
  c = synthetic_tiny.get_config('test')
  c.data.root = data['root']
  c.data.priors = data['priors']
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def overrides_as_flags(data, **overrides) -> list:
  """The same config as `config(data, **overrides)` as train.py flags."""
  flags = [f'--config.data.root={data["root"]}', f'--config.data.priors={data["priors"]}']
  return flags + [f'--config.{k}={v}' for k, v in overrides.items()]


@contextlib.contextmanager
def persistent_cache(directory: str, min_compile_secs: float = 0.5):
  """This process compiles into / loads from `directory`; subprocesses
  started with `subprocess_env(directory)` share it."""
  from jax._src import compilation_cache as cc
  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_secs)
  cc.reset_cache()
  try:
    yield
  finally:
    jax.config.update('jax_compilation_cache_dir', old[0])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', old[1])
    cc.reset_cache()


def xla_flags(devices: int) -> str:
  """This process's XLA_FLAGS (the test session's, tests/conftest.py) plus
  `devices` fake CPU devices, for a subprocess."""
  return f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'


def subprocess_env(cache_dir: str, devices: int = 0, min_compile_secs: float = 0.5) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(min_compile_secs),
             JAX_NUMPY_RANK_PROMOTION='raise', PYTHONPATH=REPO)
  if devices:
    env['XLA_FLAGS'] = xla_flags(devices)
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def state_arrays(state) -> dict:
  """Train state (model and optimizer) -> {name: numpy array}."""
  from a2p_jax.runtime import checkpoint as ckpt_lib
  return {k: np.asarray(jax.device_get(v)) for k, v in ckpt_lib.flatten(state).items()}


def assert_bitwise_equal(got: dict, want: dict, what: str):
  assert sorted(got) == sorted(want), what
  differ = [k for k in want if not np.array_equal(got[k], want[k])]
  assert not differ, f'{what}: {len(differ)} of {len(want)} arrays differ, e.g. {differ[:5]}'


def checkpoint_entries(workdir: str) -> tuple:
  """(names in WORKDIR/checkpoints, paths under it of unfinished orbax
  writes: names with 'tmp', e.g. '4.orbax-checkpoint-tmp')."""
  root = os.path.join(workdir, 'checkpoints')
  top = sorted(os.listdir(root)) if os.path.isdir(root) else []
  tmp = [os.path.relpath(os.path.join(d, n), root)
         for d, dirs, files in os.walk(root) for n in dirs + files if 'tmp' in n]
  return top, tmp


def tree_digest(root: str) -> dict:
  """{relative path: sha256 of the bytes, or 'dir'} of every file and
  folder under `root`: equal digests mean nothing was added, removed,
  moved or rewritten."""
  import hashlib
  out = {}
  for dirpath, dirnames, files in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = 'dir'
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def break_checkpoint(workdir: str, good_step: int, new_step: int) -> None:
  """Adds checkpoint `new_step`, a copy of `good_step` whose state arrays are
  truncated (readable meta, unreadable weights)."""
  import shutil
  ckpts = os.path.join(workdir, 'checkpoints')
  shutil.copytree(os.path.join(ckpts, str(good_step)), os.path.join(ckpts, str(new_step)))
  for dirpath, _, files in os.walk(os.path.join(ckpts, str(new_step), 'state')):
    for f in files:
      if not f.endswith('.json') and 'METADATA' not in f:
        with open(os.path.join(dirpath, f), 'r+b') as fh:
          fh.truncate(8)


def untrained_stage2_run(config, workdir: str, steps=(1,)) -> None:
  """A stage-2 workdir holding checkpoints `steps` of the untrained
  denoiser, in the layout stage2.train_and_evaluate saves (no step compiled)."""
  import jax.numpy as jnp

  from a2p_jax.diffusion import state as state_lib
  from a2p_jax.runtime import checkpoint as ckpt_lib
  from a2p_jax.runtime import sharding as shard_lib
  from a2p_jax.train import stage2
  _, state, _, _ = stage2.create_train_state(config, shard_lib.make_mesh(1))
  stats = {'mean': jnp.zeros(state_lib.DIM), 'std': jnp.ones(state_lib.DIM)}
  meta = {'config': config.to_json_best_effort(), 'stage': 'stage2'}
  mngr = ckpt_lib.manager(workdir, async_save=False)
  for step in steps:
    ckpt_lib.save(mngr, step, {'train': state, 'stats': stats}, None, meta, force=True)
  mngr.wait_until_finished()
  mngr.close()
