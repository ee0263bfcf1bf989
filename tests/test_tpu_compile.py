"""TPU compile checks (benchmarks/tpu_compile.py).

The abstract inputs and the batch search run everywhere; compiling for a
TPU topology needs libtpu (`pip install -r requirements-tpu.txt`) and is
skipped without it.
"""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from a2p_jax.train import stage1
from benchmarks import tpu_compile
from a2p_jax.configs import a2p_interhand26m, synthetic_tiny

HAS_LIBTPU = tpu_compile.libtpu_available()


def _fake_fits(peak_gib, n_dev, hbm_gib=16.0):
  """fits(global batch) over a made-up per-device peak(b) curve."""
  calls = []

  def fits(global_batch):
    assert global_batch % n_dev == 0
    calls.append(global_batch // n_dev)
    peak = peak_gib(global_batch // n_dev) * tpu_compile.GIB
    return {'peak': peak, 'alias': 0.6 * tpu_compile.GIB} if peak <= hbm_gib * tpu_compile.GIB \
        else None
  return fits, calls


@pytest.mark.parametrize('peak_gib, want, max_probes', [
    (lambda b: 1.5 + 0.26 * b, 55, 3),                       # linear: predicted, checked +1
    (lambda b: 1.0 + 0.3 * 8 * -(-b // 8), 48, 8),           # steps of 8: bisection finishes
    (lambda b: 1.0 + 0.01 * b * b, 38, 8),                   # convex
])
def test_largest_batch_search(peak_gib, want, max_probes):
  fits, calls = _fake_fits(peak_gib, 4)
  known = {12: fits(48)}
  calls.clear()
  per_dev, stats = tpu_compile.largest_batch(fits, 4, known, 16 * tpu_compile.GIB,
                                             log=lambda m: None)
  assert per_dev == want and stats['peak'] <= 16 * tpu_compile.GIB
  assert len(calls) <= max_probes, calls
  # Another slice of the same chip, started from the first one's result: two probes.
  fits, calls = _fake_fits(peak_gib, 16)
  per_dev, _ = tpu_compile.largest_batch(fits, 16, {3: fits(48)}, 16 * tpu_compile.GIB,
                                         hint=want, log=lambda m: None)
  assert per_dev == want and len(calls) == 3


def test_largest_batch_search_limit():
  fits, _ = _fake_fits(lambda b: 1.0, 2)
  per_dev, _ = tpu_compile.largest_batch(fits, 2, {4: fits(8)}, 16 * tpu_compile.GIB,
                                         limit=64, log=lambda m: None)
  assert per_dev == 64


def test_abstract_paper_state_matches_the_model():
  """The abstract state is the real train state's tree: every model
  parameter plus AdamW's two moments, nothing allocated."""
  _, state = stage1.abstract_train_state(a2p_interhand26m.get_config(), 46)
  leaves = jax.tree.leaves(state)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  model_state, opt_state = state[0], state[1]
  from flax import nnx
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model_state.filter(nnx.Param)))
  n_opt = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(opt_state)
              if x.dtype == np.float32)
  assert 50e6 < n_params < 60e6          # 53.7M trained (README: 53.58M at inference)
  assert n_opt == 2 * n_params


@pytest.mark.slow  # 16 s; the abstract paper state is checked in the default run
def test_abstract_step_args_and_lowering_on_cpu():
  """The step's arguments carry the training shardings (batch split over
  the mesh, MANO and step replicated), and the real jitted step lowers on
  them (tiny config, this machine's devices)."""
  config = synthetic_tiny.get_config()
  devices = jax.devices()
  mesh = tpu_compile.shard_lib.make_mesh(1, devices)
  batch = 2 * len(devices)
  _, _, (state, batch_args, mano, step) = tpu_compile.abstract_step_args(
      config, mesh, batch, 57)
  assert batch_args['image'].shape == (batch,) + tuple(config.model.input_hw) + (3,)
  assert batch_args['image'].dtype == np.uint8
  assert batch_args['image'].sharding.spec == P(('data', 'fsdp'))
  assert all(x.sharding.spec == P() for x in jax.tree.leaves(mano))
  assert step.shape == () and step.dtype == np.int32
  lowered = tpu_compile.lower_train_step(config, devices, batch, 57)
  assert 'func.func public @main' in lowered.as_text()


def test_missing_libtpu_exits_with_install_hint(monkeypatch, capsys):
  monkeypatch.setattr(tpu_compile, 'libtpu_available', lambda: False)
  assert tpu_compile.main(['--topologies', 'v5e-4']) == 2
  assert 'requirements-tpu.txt' in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LIBTPU, reason='libtpu not installed (pip install -r '
                    'requirements-tpu.txt)')
def test_paper_step_compiles_for_v5e_2x2():
  """The paper config's train step compiles for a v5e 2x2 slice at batch
  48 and fits its 16 GiB HBM; the compiler reports FLOPs."""
  name = 'v5e-4'
  devices = tpu_compile.topology_devices(name)
  assert len(devices) == 4
  stats = tpu_compile.compile_stats(a2p_interhand26m.get_config(), devices, 48, 46,
                                    16 * tpu_compile.GIB)
  assert 0 < stats['peak'] <= 16 * tpu_compile.GIB
  assert stats['alias'] > 0            # the state is donated
  assert stats['flops'] > 1e11         # two ResNet-50s at 12 crops of 256^2, fwd + bwd


def test_interrupted_run_prints_what_it_measured(monkeypatch, capsys):
  """A long search stopped by SIGTERM/Ctrl-C still prints its rows, with
  the batch bracket found so far."""
  gib = tpu_compile.GIB
  stats = {'argument': 0.6 * gib, 'temp': 3.5 * gib, 'output': 0.6 * gib, 'alias': 0.6 * gib,
           'peak': 4.3 * gib, 'flops': 8e11, 'compile_s': 900.0}

  def fake_run(name, config, batch, prior_channels, search, limit, hint=0, row=None, log=None):
    row.update(name=name, topology='v5e:2x2', devices=4, kind='TPU v5 lite', hbm_gib=16,
               at_batch=stats, bracket={'lo': 57, 'hi': 60})
    raise KeyboardInterrupt

  monkeypatch.setattr(tpu_compile, 'libtpu_available', lambda: True)
  monkeypatch.setattr(tpu_compile, 'run_topology', fake_run)
  assert tpu_compile.main(['--topologies', 'v5e-4,v4-8']) == 130
  out = capsys.readouterr().out
  assert '| v5e-4 | v5e:2x2 | 4 | 16 | 12 | 0.60 | 3.50 |' in out
  assert '>= 228, < 240 (search interrupted)' in out and 'v4-8' not in out
