"""Stage 2 as one jitted function on stage-1 outputs:

    repair = make_repair(graphdef, model_state, stats, (right, left), config)
    params2, info = repair(params, boxes, key)

params: {'pose_6d' (B, 2, 16, 6), 'betas' (B, 2, 10), 'root_cam' (B, 2, 3)}
(stage 1's convention; other keys are ignored); boxes (B, 2, 4) the hands'
2D boxes (x_min, y_min, x_max, y_max) px, right then left. A pair is
repaired only when its boxes overlap (IoU > 0) and its meshes penetrate;
the others come back unchanged (masking inside the compiled function). When
no pair of the batch is gated the sampler is skipped (lax.cond), so clean
batches cost the gate only. info: {'gated', 'iou', 'penetrating'} (B,).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from a2p_jax import geometry
from a2p_jax.diffusion import guidance as guidance_lib
from a2p_jax.diffusion import sampler as sampler_lib
from a2p_jax.diffusion import schedule as schedule_lib
from a2p_jax.diffusion import state as state_lib

KEYS = ('pose_6d', 'betas', 'root_cam')


def sampling_arrays(config):
  """(alpha_bar (T,), timesteps (S,), lambdas (S,)) from config.diffusion/sampling."""
  s = config.sampling
  alpha_bar = schedule_lib.cosine_alpha_bar(config.diffusion.num_steps)
  ts = schedule_lib.ddim_timesteps(config.diffusion.num_steps, s.num_steps)
  lam = sampler_lib.lambda_schedule(ts, config.diffusion.num_steps, scale=s.guidance_scale,
                                    power=s.guidance_power, start_frac=s.guidance_start)
  return alpha_bar, ts, lam


def make_sample_fn(graphdef, config, models):
  """Un-jitted (model_state, stats, params, key) -> repaired params for
  every pair (the diffusion + guidance, no gating)."""
  alpha_bar, ts, lam = sampling_arrays(config)
  s = config.sampling

  def sample(model_state, stats, params, key):
    model = nnx.merge(graphdef, model_state)
    model.eval()
    root_right = params['root_cam'][:, 0]
    x_c = state_lib.normalize(state_lib.to_state(params), stats)
    grad_fn = guidance_lib.make_guide_grad(stats, models, root_right, config.collision)
    use_guidance = s.guidance_scale > 0 or (s.final_steps and s.final_scale > 0)
    z = sampler_lib.ddim_sample(lambda x, t, c: model(x, t, c), x_c, key, alpha_bar=alpha_bar,
                                timesteps=ts, eta=s.eta,
                                guide_grad=grad_fn if use_guidance else None, lambdas=lam,
                                max_step=s.guidance_max_step,
                                refine_steps=int(s.final_steps) if use_guidance else 0,
                                refine_lambda=s.final_scale)
    return state_lib.from_state(state_lib.denormalize(z, stats), root_right)

  return sample


def make_repair(graphdef, model_state, stats, models, config):
  """The jitted gated repair `fn(params, boxes, key) -> (params, info)` (see
  the module docstring). model_state: the denoiser's nnx.State; stats:
  {'mean', 'std'} (DIM,); models: (right, left) ManoModel; config: the
  stage-2 config (diffusion, sampling, collision, gate)."""
  sample = make_sample_fn(graphdef, config, models)
  stats = {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}
  detector = config.gate.detector
  use_boxes = config.gate.box_overlap

  @jax.jit
  def repair(model_state, stats, params, boxes, key):
    params = {k: jnp.asarray(params[k], jnp.float32) for k in KEYS}
    b = params['pose_6d'].shape[0]
    iou = geometry.box_iou(boxes[:, 0], boxes[:, 1])
    pen = guidance_lib.penetrating(params, models, config.collision, detector)
    gate = pen & (iou > 0) if use_boxes else pen
    out = jax.lax.cond(jnp.any(gate), lambda p: sample(model_state, stats, p, key),
                       lambda p: p, params)
    sel = lambda new, old: jnp.where(gate.reshape((b,) + (1,) * (old.ndim - 1)), new, old)
    out = jax.tree.map(sel, out, params)
    return out, {'gated': gate, 'iou': iou, 'penetrating': pen}

  def fn(params, boxes, key):
    return repair(model_state, stats, params, jnp.asarray(boxes, jnp.float32), key)

  fn.jitted = repair
  return fn


def load(workdir: str, *, mano_dir=None, config=None):
  """(repair fn, config) from a stage-2 training workdir's newest checkpoint."""
  from a2p_jax.train import stage2
  return stage2.load_repair(workdir, mano_dir=mano_dir, config=config)


def boxes_from_params(params, models, focal, princpt):
  """Each hand's 2D box (B, 2, 4) px from its projected mesh (for callers
  without detector boxes)."""
  vr, vl = state_lib.meshes({k: jnp.asarray(params[k]) for k in KEYS}, models)
  out = []
  for v in (vr, vl):
    uv = v[..., :2] / v[..., 2:3] * focal[:, None] + princpt[:, None]
    out.append(geometry.box_from_points(uv))
  return jnp.stack(out, 1)
