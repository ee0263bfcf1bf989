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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from a2p_jax import teacher
from a2p_jax.data.hands import load_hand_models
from a2p_jax.inference import draw
from a2p_jax.inference.stage1 import make_forward
from a2p_jax.models import losses as losses_lib
from a2p_jax.models import pretrained
from a2p_jax.models.stage1 import MODEL_INPUTS, Stage1, normalize_images, param_counts
from a2p_jax.runtime import checkpoint as ckpt_lib
from a2p_jax.runtime import sharding as shard_lib
from a2p_jax.train import input as input_lib
from a2p_jax.train import loop as loop_lib
from a2p_jax.train import metrics as metrics_lib


def learning_rate_schedule(config, steps_per_epoch: int) -> Callable[[Any], Any]:
  """Constant lr (after an optional linear warm-up), divided by
  `decay_factor` at each epoch in `decay_epochs`."""
  o = config.optim
  boundaries = {int(e * steps_per_epoch): 1.0 / o.decay_factor for e in o.decay_epochs}
  return loop_lib.with_warmup(o, optax.piecewise_constant_schedule(o.lr, boundaries))


def make_optimizer(config, steps_per_epoch: int):
  lr = learning_rate_schedule(config, steps_per_epoch)
  return loop_lib.make_adamw(config.optim, lr), lr


def fae_probability(config, step):
  """Probability of feeding F_fae instead of F_p in a training step (the
  train/test-gap ablation): linear ramp to config.fae_mix.prob."""
  f = config.fae_mix
  ramp = jnp.clip(step / max(f.ramp_steps, 1), 0.0, 1.0) if f.ramp_steps else 1.0
  return f.prob * ramp


def build_model(config, prior_channels: int):
  return Stage1(config.model, prior_channels=prior_channels,
                rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))


_INITS = (('encoder_init', 'encoder', lambda m: m.encoder),
          ('fae_init', 'fae', lambda m: m.fae.backbone))


def load_pretrained(model: Stage1, config) -> None:
  """Writes config.model.encoder_init / fae_init (torchvision or timm ResNet
  state dicts, '' = keep the random init) into the encoder / the FAE's
  backbone, weights and BatchNorm statistics. For a run that starts: a
  resumed run restores everything from its checkpoint."""
  loaded = []
  for key, name, get in _INITS:
    path = config.model.get(key, '')
    if not path:
      continue
    if not os.path.isfile(path):
      raise FileNotFoundError(f'model.{key}: no such file {path}')
    state_dict = pretrained.read_state_dict(path)
    got = pretrained.resnet_layout(state_dict, path)
    want = (config.model[f'{name}_depth'], config.model[f'{name}_width'])
    if got != want:
      raise ValueError(
          f'model.{key}={path} holds a ResNet-{got[0]} of width {got[1]}, but '
          f'model.{name}_depth/{name}_width are {want[0]}/{want[1]}: set them to '
          f'{got[0]}/{got[1]} or give a matching file')
    pretrained.load_torch_resnet(get(model), state_dict, source=path)
    loaded.append(f'{name} (ResNet-{got[0]}, width {got[1]}) from {path}')
  if loaded and jax.process_index() == 0:
    print('initial weights: ' + '; '.join(loaded), flush=True)


def make_train_step(graphdef, config, *, with_priors: bool):
  """Pure step over the split state. A non-finite loss, gradient or updated
  parameter leaves the state unchanged and raises the `nonfinite` metric
  (the loop then stops), so a saved state is always finite."""
  weights = dict(config.loss)
  mano_joints = config.model.get('mano_joints', 'kinematic')
  key0 = jax.random.key(config.seed)

  def train_step(state, batch, mano, step):
    train_step.traces += 1  # Python side effect: runs once per trace
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    key = jax.random.fold_in(key0, step)
    use_fae = jax.random.bernoulli(key, fae_probability(config, step))
    priors = batch['priors'] if with_priors else None

    images = normalize_images(batch['image'])

    def loss_fn(model):
      out = model(images, priors, affine=batch['affine'], focal=batch['focal'],
                  princpt=batch['princpt'], use_fae=use_fae)
      return losses_lib.stage1_loss(out, batch, mano, weights, mano_joints)

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    new_state, grad_norm, nonfinite = loop_lib.guarded_update(model, optimizer, grads, loss,
                                                              state)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, use_fae=use_fae.astype(jnp.float32),
                   nonfinite=nonfinite)
    return new_state, metrics

  train_step.traces = 0
  return train_step


def create_train_state(config, prior_channels: int, steps_per_epoch: int, mesh, *,
                       init_files: bool = False):
  """(graphdef, state, state_sharding, lr_fn): the split (model, optimizer)
  placed on the mesh; with `init_files`, config.model.encoder_init /
  fae_init are loaded first (`load_pretrained`)."""
  tx, lr_fn = make_optimizer(config, steps_per_epoch)
  model = build_model(config, prior_channels)
  if init_files:
    load_pretrained(model, config)
  graphdef, state, state_sharding = loop_lib.create_train_state(model, tx, mesh)
  return graphdef, state, state_sharding, lr_fn


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


BATCH_KEYS = ('image', 'joints_2d', 'joints_2d_valid', 'joints_rel', 'depth_rel', 'joint_valid',
              'hand_valid', 'mano_pose', 'mano_shape', 'mano_trans', 'mano_valid', 'rel_root',
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
  if config.data.get('mix'):
    parts, epoch_size, priors = input_lib.mixture(config, workdir)
    train_iter = iter(input_lib.mixed_train_dataset(config, parts, models_np,
                                                    local_batch=local_batch))
  else:
    src = input_lib.source(config, workdir, config.data.train_split)
    priors = input_lib.prior_store(config, workdir, src)
    epoch_size = len(src)
    train_iter = iter(input_lib.train_dataset(config, src, models_np, local_batch=local_batch,
                                              priors=priors))
  steps_per_epoch = max(epoch_size // config.batch_size, 1)
  num_steps = int(config.num_train_steps or math.ceil(config.num_epochs * steps_per_epoch))
  keys = BATCH_KEYS + (('priors',) if priors is not None else ())

  def next_batch(step):
    local = next(train_iter)
    return shard_lib.global_batch({k: local[k] for k in keys}, data_sharding), local

  # Model, optimizer, state shardings. The initial weight files are read only
  # when the run starts: a resumed run does not need them.
  prior_channels = (teacher.prior_channels(priors, config.data.prior_groups or None)
                    if priors is not None else 1)
  graphdef, state, state_sharding, lr_fn = create_train_state(
      config, prior_channels, steps_per_epoch, mesh,
      init_files=not ckpt_lib.has_checkpoint(workdir))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  mano = shard_lib.put(tuple(models_np), replicated)
  if is_main:
    counts = param_counts(nnx.merge(graphdef, state)[0])
    print('parameters: ' + ', '.join(f'{k} {v / 1e6:.2f}M' for k, v in counts.items()),
          flush=True)

  # Update step; pictures of the eval-mode model's meshes over inputs.
  train_step, step_fn = jit_train_step(graphdef, config, mesh, state_sharding,
                                       with_priors=priors is not None)
  model_graphdef = nnx.split(nnx.merge(graphdef, state)[0])[0]
  forward = make_forward(model_graphdef, config.model.get('mano_joints', 'kinematic'))

  def pictures(step, state, args, local):
    model_state = nnx.split(nnx.merge(graphdef, state)[0])[1]
    return _pictures(forward, model_state, local, args[0])

  # Restore and loop.
  meta = {'config': config.to_json_best_effort(), 'prior_channels': int(prior_channels)}
  out = loop_lib.run(config, workdir, writer, name='stage1', train_step=train_step, state=state,
                     args=(mano,), next_batch=next_batch, num_steps=num_steps, lr_fn=lr_fn,
                     meta=meta, data_iter=train_iter, pictures=pictures)
  return {'metrics': out['metrics'], 'history': out['history'], 'step': out['step'],
          'train_step_traces': step_fn.traces, 'state': out['state']}


def _pictures(forward, model_state, local, mano, n: int = 2):
  """Predicted meshes over the first inputs of a batch."""
  sl = {k: np.asarray(local[k][:n]) for k in MODEL_INPUTS}
  mesh = forward(model_state, sl['image'], None, sl['affine'], sl['focal'], sl['princpt'], mano)
  verts = _host(mesh['verts'])  # (n, 2, V, 3)
  return {f'pred/{i}': draw.overlay_points(sl['image'][i], verts[i], sl['focal'][i],
                                           sl['princpt'][i], affine=sl['affine'][i])
          for i in range(verts.shape[0])}
