"""Stage-2 training (the conditional diffusion model): `train_and_evaluate(config, workdir)`.

Read top to bottom: mesh, input (pairs -> normalized state vectors and
their statistics), model and optimizer, the jitted update step, checkpoint
restore, the loop. Forked from stage1.py where they differ: the input is a
small in-memory pair set, so batches are drawn by index from
(config.seed, step) on the host (a resumed run draws what an uninterrupted
one would; no iterator state). The normalization statistics are part of
the checkpointed tree: {'train': (model, optimizer) state, 'stats':
{'mean', 'std'}}.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import pairs as pairs_lib
from a2p_jax.diffusion import schedule as schedule_lib
from a2p_jax.diffusion import state as state_lib
from a2p_jax.models.denoiser import Denoiser
from a2p_jax.runtime import sharding as shard_lib
from a2p_jax.train import input as input_lib
from a2p_jax.train import loop as loop_lib
from a2p_jax.train import metrics as metrics_lib


def pairs_path(config, workdir: str) -> str:
  """config.data.pairs_file, or WORKDIR/data/pairs_<split>_<num>_<seed>.npz
  built once (process 0) from the data set's ground truth."""
  d = config.data
  if d.pairs_file:
    if not os.path.exists(d.pairs_file):
      raise FileNotFoundError(f'config.data.pairs_file={d.pairs_file!r} does not exist')
    return d.pairs_file
  path = os.path.join(workdir, 'data', f'pairs_{d.train_split}_{d.num_pairs}_{config.seed}.npz')
  if jax.process_index() == 0 and not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    models = load_hand_models(d.mano_dir or None)
    src = input_lib.source(config, workdir, d.train_split)
    gt = pairs_lib.ground_truth(src, models, max_examples=d.max_examples or None,
                                progress=config.progress)
    print(f'building {d.num_pairs} stage-2 pairs from {len(gt["betas"])} ground truths',
          flush=True)
    g, c = pairs_lib.perturbed_pairs(gt, models, int(d.num_pairs), seed=config.seed,
                                     min_depth_m=d.pairs_min_depth_mm / 1000.0,
                                     progress=config.progress)
    pairs_lib.save(path, g, c)
  shard_lib.barrier('stage2_pairs')
  return path


def load_pairs(config, workdir: str):
  """(x0 (N, DIM), x_c (N, DIM), source (N,)) unnormalized: the perturbed
  pairs and, if configured, the stage-1 prediction pairs (source 1)."""
  d = config.data
  if d.stage1_fraction > 0 and not d.stage1_pairs_file:
    raise ValueError(
        f'config.data.stage1_fraction={d.stage1_fraction} draws that share of each batch '
        'from stage-1 prediction pairs, but config.data.stage1_pairs_file is empty: build '
        'them with `python -m a2p_jax.build_pairs --stage1_workdir STAGE1_WORKDIR --stage1_step '
        'all --root DIR --split train --out FILE.npz` and pass '
        '--config.data.stage1_pairs_file=FILE.npz (or --config.data.stage1_fraction=0 to train '
        'on perturbed ground truth only)')
  if d.stage1_pairs_file and not os.path.exists(d.stage1_pairs_file):
    raise FileNotFoundError(f'config.data.stage1_pairs_file={d.stage1_pairs_file!r} does not '
                            'exist')
  gt, cond, source = pairs_lib.load(pairs_path(config, workdir))
  if config.data.stage1_pairs_file:
    g1, c1, _ = pairs_lib.load(config.data.stage1_pairs_file)
    gt, cond = pairs_lib.concat(gt, g1), pairs_lib.concat(cond, c1)
    source = np.concatenate([np.zeros(len(source), np.int8), np.ones(len(g1['betas']), np.int8)])
  to = jax.jit(state_lib.to_state)
  return np.asarray(to(gt)), np.asarray(to(cond)), source


def draw_indices(config, step: int, source: np.ndarray) -> np.ndarray:
  """Global batch indices of a step: a function of (seed, step) only; with
  two sources, each example comes from source 1 with probability
  config.data.stage1_fraction."""
  rng = np.random.default_rng([config.seed, 2, step])
  n = config.batch_size
  idx0, idx1 = np.flatnonzero(source == 0), np.flatnonzero(source == 1)
  if len(idx1) == 0:
    return rng.integers(0, len(source), n)
  if len(idx0) == 0:
    return idx1[rng.integers(0, len(idx1), n)]
  from1 = rng.random(n) < config.data.stage1_fraction
  return np.where(from1, idx1[rng.integers(0, len(idx1), n)], idx0[rng.integers(0, len(idx0), n)])


def build_model(config):
  return Denoiser(config.model, state_lib.TOKENS,
                  rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))


def make_optimizer(config):
  lr = loop_lib.with_warmup(config.optim, optax.constant_schedule(config.optim.lr))
  return loop_lib.make_adamw(config.optim, lr), lr


def create_train_state(config, mesh):
  """(graphdef, state, state_sharding, lr_fn): split (model, optimizer) on the mesh."""
  tx, lr_fn = make_optimizer(config)
  graphdef, state, state_sharding = loop_lib.create_train_state(build_model(config), tx, mesh)
  return graphdef, state, state_sharding, lr_fn


def _mano_terms(pred_z, x0_z, stats, mano):
  """Joint and vertex mean squared errors (cm^2) in the right-root frame."""
  zero = jnp.zeros(pred_z.shape[:1] + (3,), pred_z.dtype)
  p = state_lib.from_state(state_lib.denormalize(pred_z, stats), zero)
  g = state_lib.from_state(state_lib.denormalize(x0_z, stats), zero)
  jp, jg = state_lib.joints(p, mano), state_lib.joints(g, mano)
  vp, vg = state_lib.meshes(p, mano), state_lib.meshes(g, mano)
  sq = lambda a, b: 1e4 * jnp.mean(jnp.sum((a - b) ** 2, -1))
  return sq(jp, jg), 0.5 * (sq(vp[0], vg[0]) + sq(vp[1], vg[1]))


def make_train_step(graphdef, config):
  """Pure step over the split state; non-finite updates are skipped and flagged."""
  alpha_bar = jnp.asarray(schedule_lib.cosine_alpha_bar(config.diffusion.num_steps))
  w = config.loss
  key0 = jax.random.key(config.seed)
  use_mano = bool(w.joints or w.vertices)

  def train_step(state, batch, stats, mano, step):
    train_step.traces += 1
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    key = jax.random.fold_in(key0, step)
    x0 = state_lib.normalize(batch['x0'], stats)
    x_c = state_lib.normalize(batch['x_c'], stats)
    kt, kn = jax.random.split(key)
    t = schedule_lib.sample_t(kt, x0.shape[:1], config.diffusion.num_steps)
    x_t = schedule_lib.q_sample(x0, t, jax.random.normal(kn, x0.shape, x0.dtype), alpha_bar)

    def loss_fn(model):
      pred = model(x_t, t, x_c)
      l_x0 = jnp.mean(jnp.sum((pred - x0) ** 2, -1))
      metrics = {'loss_x0': l_x0}
      total = w.x0 * l_x0
      if use_mano:
        lj, lv = _mano_terms(pred, x0, stats, mano)
        total = total + w.joints * lj + w.vertices * lv
        metrics.update(loss_joints_cm2=lj, loss_vertices_cm2=lv)
      return total, metrics

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    new_state, grad_norm, nonfinite = loop_lib.guarded_update(model, optimizer, grads, loss,
                                                              state)
    return new_state, dict(metrics, loss=loss, grad_norm=grad_norm, nonfinite=nonfinite)

  train_step.traces = 0
  return train_step


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains stage 2. Returns {'metrics', 'history', 'step',
  'train_step_traces', 'state', 'stats'}."""
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # Mesh (checked before anything is written into the workdir).
  mesh = shard_lib.make_mesh(config.mesh.fsdp)
  local_batch = shard_lib.check_batch_size(config.batch_size, mesh)
  writer = metrics_lib.Writer(workdir)
  data_sharding = shard_lib.batch_sharding(mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Input: pairs -> state vectors; statistics from the training targets.
  models_np = load_hand_models(config.data.mano_dir or None)
  x0_all, xc_all, source = load_pairs(config, workdir)
  stats_np = state_lib.compute_stats(x0_all)
  num_steps = int(config.num_train_steps)
  if is_main:
    print(f'stage 2: {len(source)} pairs ({int(np.sum(source == 1))} from stage 1)', flush=True)

  # Model, optimizer, shardings.
  graphdef, train_state, state_sharding, lr_fn = create_train_state(config, mesh)
  stats = shard_lib.put({k: jnp.asarray(v) for k, v in stats_np.items()}, replicated)
  mano = shard_lib.put(tuple(models_np), replicated)
  if is_main:
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
        nnx.state(nnx.merge(graphdef, train_state)[0], nnx.Param)))
    print(f'denoiser parameters: {n_params / 1e6:.2f}M', flush=True)

  # Update step.
  step_fn = make_train_step(graphdef, config)
  train_step = jax.jit(step_fn,
                       in_shardings=(state_sharding, data_sharding, replicated, replicated, None),
                       out_shardings=(state_sharding, replicated), donate_argnums=(0,))

  # Restore and loop. The statistics are part of the checkpointed tree: a
  # resumed run keeps the ones it started with.
  lo = jax.process_index() * local_batch

  def next_batch(step):
    idx = draw_indices(config, step, source)[lo:lo + local_batch]
    return shard_lib.global_batch({'x0': x0_all[idx], 'x_c': xc_all[idx]}, data_sharding), None

  meta = {'config': config.to_json_best_effort(), 'stage': 'stage2'}
  out = loop_lib.run(config, workdir, writer, name='stage2', train_step=train_step,
                     state=train_state, args=(stats, mano), next_batch=next_batch,
                     num_steps=num_steps, lr_fn=lr_fn, meta=meta,
                     pack=lambda state, args: {'train': state, 'stats': args[0]},
                     unpack=lambda tree, args: (tree['train'], (tree['stats'],) + args[1:]))
  return {'metrics': out['metrics'], 'history': out['history'], 'step': out['step'],
          'train_step_traces': step_fn.traces, 'state': out['state'], 'stats': out['args'][0]}
