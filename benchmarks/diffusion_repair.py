"""Stage-2 repair on held-out synthetic penetrating pairs, and its latency.

    .venv/bin/python train.py --config a2p_jax/configs/diffusion_tiny.py --workdir /tmp/a2p_diffusion
    .venv/bin/python benchmarks/diffusion_repair.py --workdir /tmp/a2p_diffusion

Held-out pairs: ground truth of the synthetic set's val+test splits
(procedural hand, NOT MANO; frames never seen in training) perturbed until
the hands penetrate (as the training pairs). Boxes from the projected
meshes. Rows: the trained model with guidance (the config's sampling), the
same without guidance, guidance alone (an untrained denoiser is the identity
X_c, so only the guidance acts). PenVol: geometry.penetration_volume of the
sealed meshes (cm^3), PenDist: deepest vertex inside the other hand (mm),
joint error: mean distance of both hands' 21 joints to the ground truth in
camera space (mm; the right wrist is the anchor, so it includes the left
hand's placement), MPJPE: per hand, wrist-aligned (mm). Latency: median of
the jitted repair (compile excluded) vs the jitted stage-1 inference
forward (images -> parameters, FAE path) of two configs; "pipeline" is
(stage 1 + stage 2) / stage 1, the frame-rate cost the paper quotes (its
stage 2 takes 56 fps to 18 fps: 3.1x).
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from a2p_jax import geometry
from a2p_jax.arrays import pad_batch
from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import pairs as pairs_lib
from a2p_jax.diffusion import repair as repair_lib
from a2p_jax.diffusion import state as state_lib
from a2p_jax.inference.stage2 import restore
from a2p_jax.models.denoiser import Denoiser
from timing import median_s

FOCAL, PRINCPT = 1000.0, 256.0


def eval_pairs(workdir, config, models, num, seed):
  path = os.path.join(workdir, 'data', f'pairs_heldout_{num}_{seed}.npz')
  if not os.path.exists(path):
    from a2p_jax.data.interhand26m import InterHand26M
    root = config.data.root or os.path.join(workdir, 'data', 'synthetic')
    gts = []
    for split in ('val', 'test'):
      ds = InterHand26M(root, split, mano_dir=config.data.mano_dir or None, progress=False)
      gts.append(pairs_lib.ground_truth(ds, models, progress=False))
    gt = pairs_lib.concat(*gts)
    print(f'{len(gt["betas"])} held-out ground truths', flush=True)
    g, c = pairs_lib.perturbed_pairs(gt, models, num, seed=seed,
                                     min_depth_m=config.data.pairs_min_depth_mm / 1000.0)
    pairs_lib.save(path, g, c)
  g, c, _ = pairs_lib.load(path)
  return g, c


def boxes(params, models):
  n = len(params['betas'])
  return np.asarray(repair_lib.boxes_from_params(params, models, jnp.full((n, 2), FOCAL),
                                                 jnp.full((n, 2), PRINCPT)))


def run(repair, params, bx, chunk=64):
  outs, gated = [], []
  n = len(params['betas'])
  for s in range(0, n, chunk):
    p = {k: v[s:s + chunk] for k, v in params.items()}
    m = len(p['betas'])
    # Padded: one compiled shape.
    o, info = repair(pad_batch(p, chunk), pad_batch(bx[s:s + chunk], chunk), jax.random.key(s))
    outs.append({k: np.asarray(v)[:m] for k, v in o.items()})
    gated.append(np.asarray(info['gated'])[:m])
  return pairs_lib.concat(*outs), np.concatenate(gated)


def scores(params, gt, models):
  vr, vl = state_lib.meshes(params, models)
  fr, fl = models[0].faces, models[1].faces
  vol = np.concatenate([np.asarray(geometry.penetration_volume(vr[s:s + 16], fr, vl[s:s + 16], fl))
                        for s in range(0, len(vr), 16)]) * 1e6
  depth = pairs_lib.penetration_depth(params, models) * 1e3
  jp, jg = np.asarray(state_lib.joints(params, models)), np.asarray(state_lib.joints(gt, models))
  err = np.linalg.norm(jp - jg, axis=-1) * 1e3
  aligned = np.linalg.norm((jp - jp[..., :1, :]) - (jg - jg[..., :1, :]), axis=-1) * 1e3
  return {'penvol_cm3': vol.mean(), 'penvol_median_cm3': np.median(vol),
          'penetrating_%': 100 * np.mean(vol > 0), 'pendist_mm': depth.mean(),
          'joint_err_mm': err.mean(), 'mpjpe_wrist_mm': aligned.mean()}


def stage1_forward_s(config_module, batch, repeats):
  import importlib
  from a2p_jax.models.stage1 import Stage1
  cfg = importlib.import_module(config_module).get_config()
  model = Stage1(cfg.model, prior_channels=8, rngs=nnx.Rngs(0))
  graphdef, st = nnx.split(model)
  h, w = cfg.model.input_hw

  @jax.jit
  def fwd(st, images, affine, focal, princpt):
    m = nnx.merge(graphdef, st)
    m.eval()
    out = m(images, None, affine=affine, focal=focal, princpt=princpt)
    return {k: out[k] for k in ('pose_6d', 'betas', 'root_cam')}

  images = jnp.zeros((batch, h, w, 3), jnp.float32)
  affine = jnp.tile(jnp.asarray([[1.0, 0, 0], [0, 1.0, 0]]), (batch, 1, 1))
  focal, princpt = jnp.full((batch, 2), 500.0), jnp.full((batch, 2), h / 2)
  return median_s(lambda: fwd(st, images, affine, focal, princpt), repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--num', type=int, default=64)
  p.add_argument('--seed', type=int, default=123)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--skip_paper_stage1', action='store_true')
  p.add_argument('--no_latency', action='store_true')
  p.add_argument('--keep_variants', nargs='*', default=[],
                 help="extra rows: the config's sampling with sampling.keep set to each, "
                 "e.g. betas betas,fingers (a2p_jax.diffusion.state.PARTS)")
  p.add_argument('--set', action='append', default=[],
                 help='config overrides, e.g. --set guidance_scale=0.05 --set gate.chunk=8')
  args = p.parse_args()

  graphdef, model_state, stats, config, _ = restore(args.workdir)
  for kv in args.set:  # section.key=value (section defaults to sampling)
    k, v = kv.split('=')
    sec, k = k.split('.') if '.' in k else ('sampling', k)
    old = config[sec].get(k)
    if isinstance(old, (int, float)) and not isinstance(old, bool):
      v = type(old)(float(v))
    with config.unlocked():
      config[sec][k] = v  # a string unless the field is a number
  models = load_hand_models(config.data.mano_dir or None)
  gt, cond = eval_pairs(args.workdir, config, models, args.num, args.seed)
  bx = boxes(cond, models)
  print(f'{len(cond["betas"])} held-out penetrating pairs; sampling: '
        f'{dict(config.sampling)}', flush=True)

  rows = {'input (penetrating X_c)': scores(cond, gt, models)}
  variants = [('stage 2: diffusion + guidance', config, model_state)]
  no_guid = config.copy_and_resolve_references()
  no_guid.sampling.guidance_scale = 0.0
  no_guid.sampling.final_steps = 0
  variants.append(('stage 2: diffusion, no guidance', no_guid, model_state))
  untrained = nnx.split(Denoiser(config.model, state_lib.TOKENS, rngs=nnx.Rngs(0)))[1]
  variants.append(('guidance only (untrained denoiser = X_c)', config, untrained))
  for keep in args.keep_variants:
    kc = config.copy_and_resolve_references()
    kc.sampling.keep = keep
    variants.append((f'stage 2, keep {keep} from X_c', kc, model_state))
  fns = {}
  for name, cfg, st in variants:
    fn = repair_lib.make_repair(graphdef, st, stats, models, cfg)
    fns[name] = fn
    t = time.perf_counter()
    out, gated = run(fn, cond, bx)
    print(f'{name}: {time.perf_counter() - t:.1f} s (incl. compile), gated {gated.mean():.2f}',
          flush=True)
    rows[name] = scores(out, gt, models)

  cols = ['penvol_cm3', 'penvol_median_cm3', 'penetrating_%', 'pendist_mm', 'joint_err_mm',
          'mpjpe_wrist_mm']
  print('\n| variant | ' + ' | '.join(cols) + ' |')
  print('|---|' + '---|' * len(cols))
  base = rows['input (penetrating X_c)']['penvol_cm3']
  for name, r in rows.items():
    print(f'| {name} | ' + ' | '.join(f'{r[c]:.3f}' for c in cols) + ' |')
  print('\nPenVol ratio input / output: ' + ', '.join(
      f'{n}: {base / max(r["penvol_cm3"], 1e-9):.1f}x' for n, r in rows.items()
      if not n.startswith('input')))

  if args.no_latency:
    return
  # Latency: clean batches, a mixed one (1 in 8 penetrating), all penetrating.
  fn = fns['stage 2: diffusion + guidance']
  print(f'\n| batch | input | gated | repair ms | stage-1 tiny fwd ms | stage-1 paper fwd ms | '
        f'ratio to tiny | ratio to paper | pipeline tiny | pipeline paper |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for b in (1, 64):
    s1_tiny = stage1_forward_s('a2p_jax.configs.synthetic_tiny', b, args.repeats)
    s1_paper = (float('nan') if args.skip_paper_stage1 else
                stage1_forward_s('a2p_jax.configs.a2p_interhand26m', b, max(2, args.repeats // 2)))
    mixes = [('ground truth (clean)', 0.0), ('1 in 8 penetrating', 0.125),
             ('all penetrating', 1.0)] if b > 1 else [('ground truth (clean)', 0.0),
                                                       ('penetrating', 1.0)]
    for label, frac in mixes:
      k = int(round(frac * b))
      pb = {key: np.concatenate([np.resize(cond[key], (k,) + cond[key].shape[1:]),
                                 np.resize(gt[key], (b - k,) + gt[key].shape[1:])])
            for key in cond}
      bb = boxes(pb, models)
      gated = float(np.mean(np.asarray(fn(pb, bb, jax.random.key(0))[1]['gated'])))
      t = median_s(lambda: fn(pb, bb, jax.random.key(0)), args.repeats)
      print(f'| {b} | {label} | {gated:.2f} | {1e3 * t:.1f} | {1e3 * s1_tiny:.1f} | '
            f'{1e3 * s1_paper:.1f} | {t / s1_tiny:.2f} | {t / s1_paper:.2f} | '
            f'{1 + t / s1_tiny:.2f} | {1 + t / s1_paper:.2f} |', flush=True)


if __name__ == '__main__':
  main()
