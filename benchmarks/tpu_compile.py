"""Does the stage-1 train step fit a TPU slice? AOT compile checks, no TPU needed.

    pip install -r requirements-tpu.txt      # or: pip install -e .[tpu]
    python benchmarks/tpu_compile.py [--topologies v5e-4,v5e-16,v4-8] [--no_search]

Compiles the paper config's stage-1 train step (a2p_jax/configs/a2p_interhand26m.py,
global batch 48, Sapiens priors: 46 channels) for TPU topologies described
by `jax.experimental.topologies` (libtpu's compiler running on this CPU, no
TPU attached) and prints a markdown table: per-device memory of the
compiled executable (arguments, temporaries, outputs, donated aliases,
peak), FLOPs per step from XLA's cost analysis, and the largest global
batch that fits the chip's HBM (bisection over the per-device batch; a
batch fits when the TPU compiler accepts it and the peak is within the HBM
figure in TOPOLOGIES). The step is the one training runs:
`stage1.jit_train_step` over `sharding.make_mesh` / `state_shardings` /
`batch_sharding`, lowered on abstract inputs (ShapeDtypeStructs carrying
the shardings), so nothing is allocated.

`--sapiens` compiles the Sapiens teacher's forward instead (backbone + head,
a2p_jax/teacher/sapiens_jax.py; 0.3b and 1b with the pose head, 8 images of
1024 x 768 per chip, bfloat16, parameters replicated and the batch split) and
prints the memory per chip: does a precompute batch fit?

    python benchmarks/tpu_compile.py --sapiens [--topologies v5e-4,v4-8]
        [--sapiens_sizes 0.3b,1b] [--sapiens_batch 8] [--sapiens_head pose]

Exits with status 2 and says how to install libtpu when it is missing.
"""

import argparse
import functools
import importlib
import importlib.util
import os
import platform
import signal
import sys
import time

if __name__ == '__main__':
  # The TPU plugin is loaded only to describe topologies; JAX's own backend
  # stays the CPU (no TPU attached: skips the TPU probe and its metadata query).
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from a2p_jax.data.hands import load_hand_models  # noqa: E402
from a2p_jax.runtime import sharding as shard_lib  # noqa: E402
from a2p_jax.teacher import sapiens  # noqa: E402
from a2p_jax.train import stage1  # noqa: E402

if __package__:  # imported as benchmarks.tpu_compile (tests/test_tpu_compile.py)
  from .train_batch import random_batch
else:  # python benchmarks/tpu_compile.py: this folder is on sys.path
  from train_batch import random_batch

GIB = 2 ** 30
INSTALL_HINT = ('libtpu is not installed: it is an optional extra. Install it with\n'
                '    pip install -r requirements-tpu.txt\n'
                'or  pip install -e ".[tpu]"\n'
                '(a separate virtualenv keeps the default CPU install light).')

# Sapiens teacher maps fed to Proj in the paper config: 42 keypoint + 3
# segmentation + 1 depth channels.
SAPIENS_PRIOR_CHANNELS = len(sapiens.channel_names())

# name -> get_topology_desc arguments and HBM per chip (Cloud TPU system
# architecture: v5e 16 GiB, v4 32 GiB; v4 'megacore' = one JAX device per
# chip, its two TensorCores fused).
TOPOLOGIES = {
    'v5e-4': dict(topology_name='v5e:2x2', chip_config_name='default',
                  chips_per_host_bounds=(2, 2, 1), wrap=(False, False, False), hbm_gib=16),
    'v5e-8': dict(topology_name='v5e:2x4', chip_config_name='default',
                  chips_per_host_bounds=(2, 2, 1), wrap=(False, False, False), hbm_gib=16),
    'v5e-16': dict(topology_name='v5e:4x4', chip_config_name='default',
                   chips_per_host_bounds=(2, 2, 1), wrap=(False, False, False), hbm_gib=16),
    'v4-8': dict(topology_name='v4:2x2x1', chip_config_name='megacore',
                 chips_per_host_bounds=(2, 2, 1), wrap=(False, False, False), hbm_gib=32),
    'v4-16': dict(topology_name='v4:2x2x2', chip_config_name='megacore',
                  chips_per_host_bounds=(2, 2, 1), wrap=(False, False, False), hbm_gib=32),
}
DEFAULT_TOPOLOGIES = ('v5e-4', 'v5e-16', 'v4-8', 'v4-16')


def libtpu_available() -> bool:
  path = os.environ.get('TPU_LIBRARY_PATH')
  return bool(path and os.path.isfile(path)) or importlib.util.find_spec('libtpu') is not None


def libtpu_version() -> str:
  try:
    from importlib.metadata import version
    return version('libtpu')
  except Exception:  # noqa: BLE001  (a TPU_LIBRARY_PATH build has no metadata)
    return 'unknown'


def topology_devices(name: str):
  """Compile-only TPU devices of a named slice (needs libtpu)."""
  from jax.experimental import topologies
  # Compile-only: no chip is opened, so several of these (or one beside a
  # job using the TPU) may hold libtpu at once; without this the second
  # stops on libtpu's lockfile (/tmp/libtpu_lockfile).
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  spec = dict(TOPOLOGIES[name])
  spec.pop('hbm_gib')
  return topologies.get_topology_desc(platform='tpu', num_slices=1, **spec).devices


def _with_sharding(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def abstract_step_args(config, mesh, global_batch: int, prior_channels: int):
  """(graphdef, state_sharding, args): the train step's arguments (state,
  batch, mano, step) as ShapeDtypeStructs with the shardings training uses."""
  shard_lib.check_batch_size(global_batch, mesh)
  graphdef, state = stage1.abstract_train_state(config, prior_channels)
  state_sharding = shard_lib.state_shardings(mesh, state)
  replicated = NamedSharding(mesh, P())
  one = random_batch(np.random.default_rng(0), 1, tuple(config.model.input_hw), prior_channels)
  batch = {k: jax.ShapeDtypeStruct((global_batch,) + v.shape[1:], v.dtype,
                                   sharding=shard_lib.batch_sharding(mesh))
           for k, v in one.items()}
  mano = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                     sharding=replicated),
                      tuple(load_hand_models(config.data.mano_dir or None)))
  step = jax.ShapeDtypeStruct((), np.int32, sharding=replicated)
  return graphdef, state_sharding, (_with_sharding(state, state_sharding), batch, mano, step)


def lower_train_step(config, devices, global_batch: int, prior_channels: int):
  """The jitted stage-1 train step lowered for a mesh over `devices`."""
  mesh = shard_lib.make_mesh(config.mesh.fsdp, devices)
  graphdef, state_sharding, args = abstract_step_args(config, mesh, global_batch,
                                                      prior_channels)
  jitted, _ = stage1.jit_train_step(graphdef, config, mesh, state_sharding, with_priors=True)
  return jitted.lower(*args)


class OutOfMemory(Exception):
  pass


def compile_stats(config, devices, global_batch: int, prior_channels: int, hbm_bytes: int):
  """Per-device memory (bytes) and FLOPs of the compiled step; raises
  OutOfMemory when the compiler runs out of HBM or the peak exceeds it."""
  t0 = time.perf_counter()
  try:
    compiled = lower_train_step(config, devices, global_batch, prior_channels).compile()
  except jax.errors.JaxRuntimeError as e:
    msg = str(e)
    if 'RESOURCE_EXHAUSTED' in msg or 'Ran out of memory' in msg:
      raise OutOfMemory(msg.splitlines()[0][:300]) from e
    raise
  s = executable_stats(compiled)
  s.update(batch=global_batch, compile_s=time.perf_counter() - t0)
  if s['peak'] > hbm_bytes:
    raise OutOfMemory(f"peak {s['peak'] / GIB:.2f} GiB > HBM {hbm_bytes / GIB:.0f} GiB")
  return s


def executable_stats(compiled) -> dict:
  """Per-device memory (bytes) and FLOPs of a compiled executable; peak =
  argument + output - alias + temp + code (or the compiler's own peak when
  it reports a larger one)."""
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  s = {'argument': mem.argument_size_in_bytes, 'temp': mem.temp_size_in_bytes,
       'output': mem.output_size_in_bytes, 'alias': mem.alias_size_in_bytes,
       'code': mem.generated_code_size_in_bytes,
       'flops': float(cost.get('flops', float('nan'))) if cost else float('nan')}
  computed = s['argument'] + s['output'] - s['alias'] + s['temp'] + s['code']
  s['peak'] = max(int(getattr(mem, 'peak_memory_in_bytes', 0) or 0), computed)
  return s


def _predict(points, hbm_bytes):
  """Largest per-device batch under HBM from (batch, peak bytes) points:
  a line through the two largest; from one point, the state (donated
  arguments plus the new state) is fixed and the rest grows with the batch."""
  b1, p1, alias1 = points[-1]
  if len(points) >= 2:
    b0, p0, _ = points[-2]
    slope = (p1 - p0) / (b1 - b0)
    fixed = p1 - slope * b1
  else:
    fixed = 2 * alias1
    slope = (p1 - fixed) / b1
  return int((hbm_bytes - fixed) // slope) if slope > 0 else 2 * b1


def largest_batch(fits, n_dev: int, known: dict, hbm_bytes: int, *, hint: int = 0,
                  limit: int = 1024, bracket=None, log=print):
  """Largest per-device batch b with fits(b * n_dev) (stats, or None when it
  does not fit), given known = {per-device batch: stats} that fit. Each
  probe is the batch a line through the measured peaks predicts (or `hint`
  and its neighbour: the result on a slice of the same chip), kept strictly
  inside the bracket; it bisects once the line has missed or after three
  probes. `bracket` (a dict) follows the search: 'lo' fits, 'hi' does not.
  Returns (b, stats of b)."""
  known = dict(known)
  lo, hi, probes = max(known), None, 0
  bracket = {} if bracket is None else bracket
  while hi is None or hi - lo > 1:
    bracket.update(lo=lo, hi=hi)
    pts = sorted((b, st['peak'], st['alias']) for b, st in known.items())
    if probes == 0 and hint:
      guess = hint
    elif probes == 1 and hint:       # confirm the hint: hint + 1 fails or hint - 1 fits
      guess = lo + 1 if lo == hint else hint - 1
    else:
      guess = _predict(pts, hbm_bytes)
      if hi is not None and (probes >= 3 or guess >= hi):  # the line is off: bisect
        guess = (lo + hi) // 2
    guess = max(guess, lo + 1)
    if hi is not None:
      guess = min(guess, hi - 1)
    if guess > limit:
      log(f'  stopped at the search limit of {limit} per device')
      break
    probes += 1
    st = fits(guess * n_dev)
    if st is None:
      hi = guess
    else:
      lo, known[guess] = guess, st
  bracket.update(lo=lo, hi=hi)
  return lo, known[lo]


def run_topology(name, config, batch: int, prior_channels: int, search: bool, limit: int,
                 hint: int = 0, row=None, log=print):
  """One row (filled into `row` as it goes, so an interrupted run can print
  what it has): stats at the config's global batch and, with `search`, the
  largest global batch that fits (starting from `hint` per device)."""
  spec = TOPOLOGIES[name]
  hbm = int(spec['hbm_gib'] * GIB)
  devices = topology_devices(name)
  n = len(devices)
  row = {} if row is None else row
  row.update(name=name, topology=spec['topology_name'], devices=n,
             kind=devices[0].device_kind, hbm_gib=spec['hbm_gib'], bracket={})

  def fits(global_batch):
    log(f'{name} ({spec["topology_name"]}, {n} x {row["kind"]}): compiling at global batch '
        f'{global_batch}')
    try:
      st = compile_stats(config, devices, global_batch, prior_channels, hbm)
    except OutOfMemory as e:
      log(f'  does not fit: {e}')
      return None
    log(f"  fits: peak {st['peak'] / GIB:.2f} GiB, compiled in {st['compile_s']:.0f} s "
        f"(GiB: argument {st['argument'] / GIB:.3f}, temp {st['temp'] / GIB:.3f}, output "
        f"{st['output'] / GIB:.3f}, alias {st['alias'] / GIB:.3f}; "
        f"{st['flops'] / 1e9:.1f} GFLOP/device)")
    return st

  row['at_batch'] = fits(batch)
  if row['at_batch'] is None:
    row['oom'] = 'over HBM'
  elif search:
    per_dev, row['at_max'] = largest_batch(fits, n, {batch // n: row['at_batch']}, hbm,
                                           hint=hint, limit=limit, bracket=row['bracket'],
                                           log=log)
    row['max_batch'] = per_dev * n
  return row


def table(rows, batch: int) -> str:
  def g(x):
    return f'{x / GIB:.2f}'
  lines = [f'| slice | topology | chips | HBM/chip GiB | per-device batch | argument GiB | '
           f'temp GiB | output GiB | alias GiB | peak GiB | GFLOP/step/device | '
           f'TFLOP/step (all chips) | compile s | largest global batch (peak GiB) |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    s = r['at_batch']
    if s is None:
      lines.append(f"| {r['name']} | {r['topology']} | {r['devices']} | {r['hbm_gib']} | "
                   f"{batch // r['devices']} | does not fit: {r['oom']} |||||||||")
      continue
    b = r.get('bracket') or {}
    if 'max_batch' in r:
      mx = f"{r['max_batch']} ({g(r['at_max']['peak'])})"
    elif b:  # interrupted search
      mx = f">= {b['lo'] * r['devices']}" + (f", < {b['hi'] * r['devices']}" if b['hi'] else '')
      mx += ' (search interrupted)'
    else:
      mx = 'not searched'

    lines.append(
        f"| {r['name']} | {r['topology']} | {r['devices']} | {r['hbm_gib']} | "
        f"{batch // r['devices']} | {g(s['argument'])} | {g(s['temp'])} | {g(s['output'])} | "
        f"{g(s['alias'])} | {g(s['peak'])} | {s['flops'] / 1e9:.1f} | "
        f"{s['flops'] * r['devices'] / 1e12:.2f} | {s['compile_s']:.0f} | {mx} |")
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- Sapiens
# The Sapiens teacher (a2p_jax/teacher/sapiens_jax.py) as a precompute would
# run it: backbone + head, parameters replicated, the batch split over the
# chips (data parallel: every chip runs the same program on its share).
SAPIENS_SIZES = ('0.3b', '1b')
SAPIENS_TOPOLOGIES = ('v5e-4', 'v4-8')


def lower_sapiens(size, devices, per_device_batch: int, head='pose', dtype='bfloat16',
                  hw=(1024, 768)):
  """The jitted Sapiens forward lowered for a data-parallel mesh over `devices`
  on abstract inputs (nothing allocated)."""
  from a2p_jax.teacher import sapiens_jax
  arch = sapiens_jax.resolve_arch(size, head)
  mesh = Mesh(np.asarray(devices), ('data',))
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                        sapiens_jax.abstract_params(arch, np.dtype(dtype)))
  images = jax.ShapeDtypeStruct((per_device_batch * len(devices),) + tuple(hw) + (3,),
                                np.float32, sharding=batch)
  f = jax.jit(functools.partial(sapiens_jax.apply, arch, dtype=np.dtype(dtype)),
              in_shardings=(replicated, batch), out_shardings=batch)
  return f.lower(params, images)


def sapiens_row(name, size, per_device_batch, head, dtype, log=print):
  spec = TOPOLOGIES[name]
  devices = topology_devices(name)
  row = {'name': name, 'topology': spec['topology_name'], 'devices': len(devices),
         'hbm_gib': spec['hbm_gib'], 'size': size, 'head': head, 'dtype': dtype,
         'per_device_batch': per_device_batch}
  log(f'{name} ({spec["topology_name"]}, {len(devices)} x {devices[0].device_kind}): compiling '
      f'Sapiens {size} + {head} head, {dtype}, {per_device_batch} images per chip')
  t0 = time.perf_counter()
  try:
    compiled = lower_sapiens(size, devices, per_device_batch, head, dtype).compile()
  except jax.errors.JaxRuntimeError as e:
    msg = str(e)
    if 'RESOURCE_EXHAUSTED' in msg or 'Ran out of memory' in msg:
      row['oom'] = msg.splitlines()[0][:200]
      log(f'  does not fit: {row["oom"]}')
      return row
    raise
  row.update(executable_stats(compiled), compile_s=time.perf_counter() - t0)
  log(f"  peak {row['peak'] / GIB:.2f} GiB per chip, compiled in {row['compile_s']:.0f} s")
  return row


def sapiens_table(rows) -> str:
  def g(x):
    return f'{x / GIB:.2f}'
  # No FLOPs column: the blocks are a lax.scan, whose body XLA's cost analysis
  # counts once (benchmarks/sapiens_speed.py has the corrected counts).
  lines = [('| model | slice | chips | HBM/chip GiB | images/chip | dtype | argument GiB | '
            'temp GiB | output GiB | peak GiB/chip | fits | compile s |'),
           '|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|']
  for r in rows:
    model = f"Sapiens {r['size']} + {r['head']} head"
    head = (f"| {model} | {r['name']} ({r['topology']}) | {r['devices']} | {r['hbm_gib']} | "
            f"{r['per_device_batch']} | {r['dtype']} |")
    if 'oom' in r:
      lines.append(f"{head} does not fit: {r['oom']} ||||||")
      continue
    fits = 'yes' if r['peak'] <= r['hbm_gib'] * GIB else 'no'
    lines.append(f"{head} {g(r['argument'])} | {g(r['temp'])} | {g(r['output'])} | "
                 f"{g(r['peak'])} | {fits} | {r['compile_s']:.0f} |")
  return '\n'.join(lines)


def main_sapiens(args):
  names = [t for t in (args.topologies or ','.join(SAPIENS_TOPOLOGIES)).split(',') if t]

  def log(m):
    print(m, file=sys.stderr, flush=True)

  rows = []
  for name in names:
    for size in args.sapiens_sizes.split(','):
      rows.append(sapiens_row(name, size, args.sapiens_batch, args.sapiens_head,
                              args.sapiens_dtype, log))
  print(f'# Sapiens forward (backbone + {args.sapiens_head} head), 1024x768 input, '
        f'{args.sapiens_batch} images per chip, params replicated, batch split; compiled on '
        f'{platform.machine()} ({os.cpu_count()} cores), jax {jax.__version__}, '
        f'libtpu {libtpu_version()}')
  print(sapiens_table(rows))
  return 0


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--topologies', default='',
                  help=f'comma-separated, from {sorted(TOPOLOGIES)} (default: '
                       f'{",".join(DEFAULT_TOPOLOGIES)}; with --sapiens '
                       f'{",".join(SAPIENS_TOPOLOGIES)})')
  ap.add_argument('--config', default='a2p_interhand26m', help='a module in a2p_jax/configs/')
  ap.add_argument('--batch', type=int, default=0, help='global batch (default: the config\'s)')
  ap.add_argument('--fsdp', type=int, default=0, help='config.mesh.fsdp (default: the config\'s)')
  ap.add_argument('--prior_channels', type=int, default=SAPIENS_PRIOR_CHANNELS)
  ap.add_argument('--no_search', action='store_true', help='skip the largest-batch search')
  ap.add_argument('--limit', type=int, default=1024, help='largest per-device batch tried')
  ap.add_argument('--sapiens', action='store_true',
                  help='compile the Sapiens teacher forward instead of the train step')
  ap.add_argument('--sapiens_sizes', default=','.join(SAPIENS_SIZES))
  ap.add_argument('--sapiens_batch', type=int, default=8, help='images per chip')
  ap.add_argument('--sapiens_head', default='pose', choices=('pose', 'seg', 'depth'))
  ap.add_argument('--sapiens_dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  args = ap.parse_args(argv)
  names = [t for t in (args.topologies or ','.join(
      SAPIENS_TOPOLOGIES if args.sapiens else DEFAULT_TOPOLOGIES)).split(',') if t]
  unknown = [t for t in names if t not in TOPOLOGIES]
  if unknown:
    ap.error(f'unknown topologies {unknown}; known: {sorted(TOPOLOGIES)}')
  if not libtpu_available():
    print(INSTALL_HINT, file=sys.stderr)
    return 2
  if args.sapiens:
    return main_sapiens(args)
  config = importlib.import_module(f'a2p_jax.configs.{args.config}').get_config()
  if args.fsdp:
    config.mesh.fsdp = args.fsdp
  batch = args.batch or config.batch_size
  log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
  rows, per_device = [], {}
  # SIGTERM or Ctrl-C: print the table of what was measured so far.
  old_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    for name in names:
      # Slices of one chip with the same per-device program (data parallel)
      # share the per-device limit: the first slice's result is the next's
      # first probe.
      chip = TOPOLOGIES[name]['topology_name'].split(':')[0]
      rows.append({})
      run_topology(name, config, batch, args.prior_channels, not args.no_search, args.limit,
                   hint=per_device.get(chip, 0), row=rows[-1], log=log)
      if 'max_batch' in rows[-1]:
        per_device[chip] = rows[-1]['max_batch'] // rows[-1]['devices']
      log(table(rows[-1:], batch))
    status = 0
  except KeyboardInterrupt:
    log('interrupted: the table has what was measured')
    rows = [r for r in rows if 'at_batch' in r]
    status = 130
  finally:
    signal.signal(signal.SIGTERM, old_handler)
  print(f'# stage-1 train step, a2p_jax/configs/{args.config}.py, global batch {batch}, '
        f'mesh.fsdp={config.mesh.fsdp}, {args.prior_channels} prior channels, float32; '
        f'compiled on {platform.machine()} ({os.cpu_count()} cores), jax {jax.__version__}, '
        f'libtpu {libtpu_version()}')
  print(table(rows, batch))
  return status


if __name__ == '__main__':
  sys.exit(main())
