"""Stage 1 at inference: a trained checkpoint's eval-mode forward on crops.

    config, predict, step, models = load_stage1(workdir)
    out = predict(eval_batch(examples, augment_config(config), models))

`eval_batch` crops reader examples as evaluation does (centred on the two
hands' box, no augmentation); `crop_inputs` crops a plain image around
given boxes (the `a2p_jax.infer` command).
"""

from typing import Optional

import jax
import numpy as np
from flax import nnx

from a2p_jax.arrays import pad_batch
from a2p_jax.data import augment, pipeline
from a2p_jax.data.hands import load_hand_models
from a2p_jax.inference.restore import restore_model
from a2p_jax.models import losses as losses_lib
from a2p_jax.models.stage1 import MODEL_INPUTS, Stage1, normalize_images
from a2p_jax.runtime import sharding as shard_lib


def augment_config(config) -> pipeline.AugmentConfig:
  """The crop and augmentation settings of a stage-1 config (training
  applies the ranges; evaluation only the crop size and prior grid)."""
  a = config.data
  hw = tuple(config.model.input_hw)
  return pipeline.AugmentConfig(input_hw=hw, prior_hw=(hw[0] // 32, hw[1] // 32),
                                scale=a.aug_scale, rotation_deg=a.aug_rotation_deg,
                                flip_prob=a.aug_flip_prob, color=a.aug_color)


def make_forward(graphdef, joints: str = 'kinematic'):
  """Jitted eval-mode forward `forward(model_state, images_u8, priors, affine,
  focal, princpt, mano)` -> {'joints' (B, 42, 3) and 'verts' (B, 2, V, 3)
  camera space, 'rel_root', 'pose_6d', 'betas', 'root_cam'}, the left hand
  placed by the relative-root head (losses.place_by_rel_root: joints,
  meshes and root_cam agree with rel_root). `graphdef` and
  `model_state` are the Stage1 model's (nnx.split(model)). priors None:
  the inference path (F_fae); teacher maps: F_p. `joints`: the model's
  config.model.mano_joints (losses.mano_outputs)."""

  @jax.jit
  def forward(model_state, images_u8, priors, affine, focal, princpt, mano):
    model = nnx.merge(graphdef, model_state)
    model.eval()
    out = model(normalize_images(images_u8), priors, affine=affine, focal=focal,
                princpt=princpt)
    mesh = losses_lib.mano_outputs(out, mano, joints)
    mesh, root_cam = losses_lib.place_by_rel_root(mesh, out['root_cam'], out['rel_root'])
    return {'joints': mesh['joints_cam'], 'verts': mesh['vertices'], 'rel_root': out['rel_root'],
            'pose_6d': out['pose_6d'], 'betas': out['betas'], 'root_cam': root_cam}

  return forward


def mano_joints(config) -> str:
  """The stage-1 config's joints ('kinematic' for runs from before the field)."""
  return config.model.get('mano_joints', 'kinematic')


def _build(config, meta):
  return Stage1(config.model, prior_channels=int(meta['prior_channels']), rngs=nnx.Rngs(0))


def load_stage1(workdir: str, *, step: Optional[int] = None, mano_dir: Optional[str] = None):
  """A trained stage-1 checkpoint: (config, predict, step, models).

  predict(batch) takes pipeline batches (image uint8, affine, focal,
  princpt; any batch size, padded to a fixed one so it compiles once) and
  returns numpy float64 {'joints' (n, 42, 3) m camera space, 'verts' (n, 2,
  V, 3), 'rel_root' (n, 3), 'pose_6d', 'betas', 'root_cam'}. The inference
  path: the FAE replaces the teacher (no priors needed); a batch with
  'priors' (teacher maps) fuses F_p instead (the distillation gap). Reads
  exactly the newest checkpoint (or `step`), model arrays only
  (`a2p_jax.inference.restore`)."""
  r = restore_model(workdir, _build, prefix='0.', step=step)
  config = r.config
  models = load_hand_models(mano_dir or config.data.mano_dir or None)
  mesh = shard_lib.make_mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  mano = jax.device_put(tuple(models), replicated)
  state = jax.device_put(r.state, replicated)
  data_sharding = shard_lib.batch_sharding(mesh)
  n_dev = mesh.devices.size
  forward = make_forward(r.graphdef, mano_joints(config))
  size = max(int(config.get('eval_batch_size', 32)) // n_dev, 1) * n_dev

  def predict(batch):
    n = len(batch['image'])
    keys = MODEL_INPUTS + (('priors',) if 'priors' in batch else ())
    outs = []
    for lo in range(0, n, size):
      part = {k: np.asarray(batch[k][lo:lo + size]) for k in keys}
      m = len(part['image'])
      part = jax.device_put(pad_batch(part, size), data_sharding)
      got = forward(state, part['image'], part.get('priors'), part['affine'], part['focal'],
                    part['princpt'], mano)
      outs.append({k: np.asarray(v, np.float64)[:m] for k, v in got.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

  predict.prior_channels = int(r.meta['prior_channels'])
  return config, predict, r.step, models


def params_predict_fn(workdir: str, mano_dir: Optional[str] = None,
                      step: Optional[int] = None):
  """predict_fn(list of reader examples) -> {'pose_6d', 'betas', 'root_cam'}
  numpy, from a stage-1 training workdir (its newest checkpoint, or `step`:
  an earlier, weaker one), for stage-2 pairs (a2p_jax.diffusion.pairs.
  prediction_pairs): each example cropped around its hands as in
  evaluation (no augmentation), the inference path (FAE, no teacher)."""
  config, predict_batch, _, models = load_stage1(workdir, step=step, mano_dir=mano_dir)
  cfg = augment_config(config)

  def predict(examples):
    out = predict_batch(eval_batch(examples, cfg, models))
    return {k: out[k] for k in ('pose_6d', 'betas', 'root_cam')}

  return predict


def eval_batch(examples, cfg: pipeline.AugmentConfig, models, join=None) -> dict:
  """Reader examples -> the model inputs of evaluation: centred crops of
  the two-hand box, no augmentation (`pipeline.process`, training=False);
  with `join` (a teacher-prior join) also 'priors'."""
  if join is not None:
    examples = [join(e) for e in examples]
  rng = np.random.default_rng(0)  # unused without training augmentation
  items = [pipeline.process(e, rng, cfg=cfg, models=models, training=False) for e in examples]
  keys = MODEL_INPUTS + (('priors',) if join is not None else ())
  return {k: np.stack([it[k] for it in items]) for k in keys}


def crop_inputs(image: np.ndarray, boxes: Optional[np.ndarray], input_hw, *,
                focal=None, princpt=None, extend: float = 1.3) -> dict:
  """The model's inputs for one image: crop (uint8), affine, focal, princpt.

  boxes (2, 4) x, y, w, h px of the right and left hand: their union,
  extended by `extend`, is the two-hand crop; None: a square around the
  whole image. focal / princpt (2,) px; default: focal = the longer side,
  princpt = the image centre."""
  h, w = image.shape[:2]
  if boxes is None:
    centre, side = np.array([(w - 1) / 2, (h - 1) / 2]), float(max(h, w))
  else:
    lo = boxes[:, :2].min(0)
    hi = (boxes[:, :2] + boxes[:, 2:]).max(0)
    centre, side = (lo + hi) / 2, float((hi - lo).max() * extend)
  focal = np.array([max(h, w)] * 2, np.float64) if focal is None else focal
  princpt = np.array([(w - 1) / 2, (h - 1) / 2]) if princpt is None else princpt
  affine = augment.crop_affine(centre, side, input_hw)
  return {'image': augment.warp_image(image, affine, input_hw),
          'affine': affine.astype(np.float32), 'focal': np.asarray(focal, np.float32),
          'princpt': np.asarray(princpt, np.float32)}
