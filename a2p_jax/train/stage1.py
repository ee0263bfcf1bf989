"""Stage-1 training: `train_and_evaluate(config, workdir)`.

Read top to bottom: mesh, input, model and optimizer, the jitted update
step, checkpoint restore, the loop. The update step is one pure function
`train_step(state, batch, mano, step) -> (state, metrics)` over the split
NNX state (model + optimizer), jitted with explicit shardings and the state
donated. Randomness is a function of (config.seed, step), so a resumed run
draws what an uninterrupted one would.
"""

import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from a2p_jax import teacher
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from a2p_jax.models import losses as losses_lib
from a2p_jax.models.stage1 import Stage1, param_counts
from a2p_jax.train import checkpoint as ckpt_lib
from a2p_jax.train import input as input_lib
from a2p_jax.train import loop as loop_lib
from a2p_jax.train import metrics as metrics_lib
from a2p_jax.train import sharding as shard_lib
from a2p_jax.train.loop import NonFiniteError  # noqa: F401  (public here too)

MODEL_INPUTS = ('image', 'affine', 'focal', 'princpt')


def learning_rate_schedule(config, steps_per_epoch: int) -> Callable[[Any], Any]:
  """Constant lr (after an optional linear warm-up), divided by
  `decay_factor` at each epoch in `decay_epochs`."""
  o = config.optim
  boundaries = {int(e * steps_per_epoch): 1.0 / o.decay_factor for e in o.decay_epochs}
  sched = optax.piecewise_constant_schedule(o.lr, boundaries)
  if o.warmup_steps:
    warm = optax.linear_schedule(0.0, o.lr, o.warmup_steps)
    sched = optax.join_schedules([warm, sched], [o.warmup_steps])
  return sched


def make_optimizer(config, steps_per_epoch: int):
  o = config.optim
  lr = learning_rate_schedule(config, steps_per_epoch)
  tx = optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  if o.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  return tx, lr


def fae_probability(config, step):
  """Probability of feeding F_fae instead of F_p in a training step (the
  train/test-gap ablation): linear ramp to config.fae_mix.prob."""
  f = config.fae_mix
  ramp = jnp.clip(step / max(f.ramp_steps, 1), 0.0, 1.0) if f.ramp_steps else 1.0
  return f.prob * ramp


def normalize(images_u8):
  """uint8 crops -> float32 with ImageNet statistics (on device: the host
  sends 4x fewer bytes)."""
  mean = jnp.asarray(IMAGENET_MEAN).reshape((1,) * (images_u8.ndim - 1) + (3,))
  std = jnp.asarray(IMAGENET_STD).reshape((1,) * (images_u8.ndim - 1) + (3,))
  return (images_u8.astype(jnp.float32) - mean) / std


def build_model(config, prior_channels: int):
  return Stage1(config.model, prior_channels=prior_channels,
                rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))


def make_train_step(graphdef, config, *, with_priors: bool):
  """Pure step over the split state. A non-finite loss, gradient or updated
  parameter leaves the state unchanged and raises the `nonfinite` metric
  (the loop then stops), so a saved state is always finite."""
  weights = dict(config.loss)
  key0 = jax.random.key(config.seed)

  def train_step(state, batch, mano, step):
    train_step.traces += 1  # Python side effect: runs once per trace
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    key = jax.random.fold_in(key0, step)
    use_fae = jax.random.bernoulli(key, fae_probability(config, step))
    priors = batch['priors'] if with_priors else None

    images = normalize(batch['image'])

    def loss_fn(model):
      out = model(images, priors, affine=batch['affine'], focal=batch['focal'],
                  princpt=batch['princpt'], use_fae=use_fae)
      return losses_lib.stage1_loss(out, batch, mano, weights)

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    grad_norm = optax.global_norm(grads)
    optimizer.update(model, grads)
    new_state = nnx.state((model, optimizer))
    finite_params = jax.tree.reduce(
        jnp.logical_and, jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), nnx.state(model)),
        jnp.bool_(True))
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & finite_params
    new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, state)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, use_fae=use_fae.astype(jnp.float32),
                   nonfinite=(~ok).astype(jnp.float32))
    return new_state, metrics

  train_step.traces = 0
  return train_step


def create_train_state(config, prior_channels: int, steps_per_epoch: int, mesh):
  """(graphdef, state, state_sharding, lr_fn): the split (model, optimizer)
  placed on the mesh."""
  model = build_model(config, prior_channels)
  tx, lr_fn = make_optimizer(config, steps_per_epoch)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  state_sharding = shard_lib.state_shardings(mesh, state)
  return graphdef, shard_lib.put(state, state_sharding), state_sharding, lr_fn


def abstract_train_state(config, prior_channels: int, steps_per_epoch: int = 1000):
  """(graphdef, state) of `create_train_state`'s (model, optimizer) as
  ShapeDtypeStructs: nothing allocated or placed (ahead-of-time lowering
  for other topologies, benchmarks/tpu_compile.py)."""
  tx, _ = make_optimizer(config, steps_per_epoch)

  def build():
    model = build_model(config, prior_channels)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  return nnx.split(nnx.eval_shape(build))


def jit_train_step(graphdef, config, mesh, state_sharding, *, with_priors: bool):
  """(jitted step, the Python step function whose `.traces` counts traces)."""
  step_fn = make_train_step(graphdef, config, with_priors=with_priors)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  jitted = jax.jit(step_fn, in_shardings=(state_sharding, shard_lib.batch_sharding(mesh),
                                          replicated, None),
                   out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  return jitted, step_fn


BATCH_KEYS = ('image', 'joints_2d', 'joints_rel', 'depth_rel', 'joint_valid', 'hand_valid',
              'mano_pose', 'mano_shape', 'mano_trans', 'mano_valid', 'rel_root',
              'rel_root_valid', 'affine', 'focal', 'princpt')


def _host(x):
  return np.asarray(jax.device_get(x))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains stage 1. Returns {'metrics': last logged means, 'history': every
  logged line, 'step', 'train_step_traces', 'state': the final split NNX
  state (model, optimizer)}."""
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # Mesh (checked before anything is written into the workdir).
  mesh = shard_lib.make_mesh(config.mesh.fsdp)
  local_batch = shard_lib.check_batch_size(config.batch_size, mesh)
  writer = metrics_lib.Writer(workdir)
  data_sharding = shard_lib.batch_sharding(mesh)

  # Input.
  models_np = load_hand_models(config.data.mano_dir or None)
  src = input_lib.source(config, workdir, config.data.train_split)
  priors = input_lib.prior_store(config, workdir, src)
  steps_per_epoch = max(len(src) // config.batch_size, 1)
  num_steps = int(config.num_train_steps or math.ceil(config.num_epochs * steps_per_epoch))
  train_ds = input_lib.train_dataset(config, src, models_np, local_batch=local_batch,
                                     priors=priors)
  train_iter = iter(train_ds)

  # Model, optimizer, state shardings.
  prior_channels = (teacher.prior_channels(priors, config.data.prior_groups or None)
                    if priors is not None else 1)
  graphdef, state, state_sharding, lr_fn = create_train_state(
      config, prior_channels, steps_per_epoch, mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  mano = shard_lib.put(tuple(models_np), replicated)
  if is_main:
    counts = param_counts(nnx.merge(graphdef, state)[0])
    print('parameters: ' + ', '.join(f'{k} {v / 1e6:.2f}M' for k, v in counts.items()),
          flush=True)

  # Update step.
  train_step, step_fn = jit_train_step(graphdef, config, mesh, state_sharding,
                                       with_priors=priors is not None)
  predict = make_predict(graphdef)

  # Restore.
  mngr = ckpt_lib.manager(workdir, max_to_keep=config.keep_checkpoints,
                          async_save=config.async_checkpoints)
  start, restored, _ = ckpt_lib.restore_latest(mngr, state, train_iter)
  if restored is not None:
    state = restored
    if is_main:
      print(f'resumed from step {start} in {mngr.directory}', flush=True)
  start = int(start or 0)

  # Loop.
  meta = {'config': config.to_json_best_effort(), 'prior_channels': int(prior_channels)}
  keys = BATCH_KEYS + (('priors',) if priors is not None else ())
  pbar = None
  if is_main and config.progress:
    from tqdm import tqdm
    pbar = tqdm(total=num_steps, initial=start, desc='stage1', unit='step', dynamic_ncols=True)
  means = loop_lib.MetricMeans(config.batch_size, lr_fn, mngr.directory)
  last, history = {}, []
  step = start
  compiled = None
  with loop_lib.Preemption() as preempt:
    while step < num_steps:
      local = next(train_iter)
      batch = shard_lib.global_batch({k: local[k] for k in keys}, data_sharding)
      step_arr = jnp.asarray(step, jnp.int32)
      if compiled is None:
        # Compile first, then meet the other processes: all enter the step's
        # collectives together (CPU gloo gives up on a peer 30 s late).
        compiled = train_step.lower(state, batch, mano, step_arr).compile()
        shard_lib.barrier('stage1_step_compiled')
      state, m = compiled(state, batch, mano, step_arr)
      step += 1
      means.add(m)
      if pbar is not None:
        pbar.update(1)
      log_now = step % config.log_every == 0 or step == num_steps
      # Asked once per step: a SIGTERM arriving after this is seen after
      # the next step (asked twice, the save could be skipped).
      stop = preempt.stop(step)
      save_now = step % config.checkpoint_every == 0 or step == num_steps or stop
      if log_now or save_now:
        last = means.means(step)
        writer.scalars(step, last, console=pbar is None or log_now)
        history.append(dict(last, step=step))
      if config.image_every and step % config.image_every == 0:
        writer.images(step, _pictures(predict, state, local, mano))
      if save_now:
        ckpt_lib.save(mngr, step, state, train_iter, meta, force=True)
      if stop:
        if is_main:
          print(f'SIGTERM: saved step {step}, exiting', flush=True)
        break
  mngr.wait_until_finished()
  mngr.close()
  if pbar is not None:
    pbar.close()
  writer.flush()
  writer.close()
  return {'metrics': last, 'history': history, 'step': step,
          'train_step_traces': step_fn.traces, 'state': state}


def make_predict(graphdef):
  """Jitted eval-mode prediction `predict(state, images_u8, priors, affine,
  focal, princpt, mano)` -> {'joints' (B, 42, 3) and 'verts' (B, 2, V, 3)
  camera space, 'rel_root', 'pose_6d', 'betas', 'root_cam'}. priors None:
  the inference path (F_fae); teacher maps: F_p."""

  @jax.jit
  def predict(state, images_u8, priors, affine, focal, princpt, mano):
    model = nnx.merge(graphdef, state)[0]
    model.eval()
    out = model(normalize(images_u8), priors, affine=affine, focal=focal, princpt=princpt)
    mesh = losses_lib.mano_outputs(out, mano)
    return {'joints': mesh['joints_cam'], 'verts': mesh['vertices'], 'rel_root': out['rel_root'],
            'pose_6d': out['pose_6d'], 'betas': out['betas'], 'root_cam': out['root_cam']}

  return predict


def _pictures(predict, state, local, mano, n: int = 2):
  """Predicted meshes over the first inputs of a batch."""
  sl = {k: np.asarray(local[k][:n]) for k in MODEL_INPUTS}
  mesh = predict(state, sl['image'], None, sl['affine'], sl['focal'], sl['princpt'], mano)
  verts = _host(mesh['verts'])  # (n, 2, V, 3)
  pics = {}
  for i in range(verts.shape[0]):
    hand = np.repeat([0, 1], verts.shape[2])
    pics[f'pred/{i}'] = metrics_lib.overlay(sl['image'][i], verts[i].reshape(-1, 3), hand,
                                            sl['affine'][i], sl['focal'][i], sl['princpt'][i])
  return pics
