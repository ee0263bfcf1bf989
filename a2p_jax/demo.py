"""The main job on the embedded default (`make demo`): no downloads, 2-core
CPU, about 20 minutes (stage 2 at half the tiny config's steps and pairs).

    python -m a2p_jax.demo --out demo_out

1. generates a small synthetic two-hand set (procedural hand, NOT MANO) in
   InterHand2.6M's layout, and the oracle teacher's priors for it;
2. trains stage 1 (a2p_jax/configs/synthetic_tiny.py) with the priors distilled
   into the FAE;
3. trains the stage-2 diffusion model (a2p_jax/configs/diffusion_tiny.py) on
   ground-truth pairs perturbed until the hands interpenetrate mixed half
   and half with stage 1's own penetrating predictions on the train split
   (its checkpoints at every saved step, weaker to final), and repairs with
   the pull-back (sampling.pullback_steps: hands moved only as far as
   needed to stop penetrating);
4. scores the test split with stage 1 alone and with stage 2's gated
   repair, under both protocols, and writes the reports with pictures.

Rerunning resumes: finished training runs are loaded, not repeated.
"""

import argparse
import json
import os
import time

import jax

from a2p_jax.configs import diffusion_tiny, synthetic_tiny
from a2p_jax.eval import run as eval_run
from a2p_jax.train import stage1, stage2


def _headline(rows) -> str:
  # InterWild's protocol, then IntagHand's, then A2P's plausibility columns
  # (report.KEY_TABLE says which paper column each reproduces).
  cols = (('MRRPE', 'mrrpe'), ('MPJPE', 'interwild/mpjpe_all'), ('MPVPE', 'interwild/mpvpe_all'),
          ('IH-MPJPE', 'interwild/mpjpe_ih'), ('SH-MPJPE', 'interwild/mpjpe_sh'),
          ('RRVE', 'rrve'), ('IntagHand MPJPE', 'intaghand/mpjpe'),
          ('IntagHand MPVPE', 'intaghand/mpvpe'), ('PenVol cm^3', 'penvol_cm3'),
          ('PenDist cm', 'pendist_cm'))
  out = ['| model | ' + ' | '.join(c for c, _ in cols) + ' |',
         '|---|' + '---:|' * len(cols)]
  for name, summ in rows:
    vals = []
    for _, k in cols:
      v = summ.get(k)
      vals.append('-' if v is None or v != v else f'{v:.3f}' if 'cm' in k else f'{v:.1f}')
    out.append(f'| {name} | ' + ' | '.join(vals) + ' |')
  return '\n'.join(out)


def _loss_line(name, result, digits) -> str:
  loss = result['metrics'].get('loss')
  if loss is None:  # a finished run loaded on rerun: no step was taken
    return f'{name}: finished run loaded (step {result["step"]})'
  return f'{name} final training loss {loss:.{digits}f} at step {result["step"]}'


def stage1_pairs(workdir: str, root: str, path: str) -> str:
  """Pairs (ii) for stage 2: every saved checkpoint's penetrating
  predictions on the train split with their ground truth, in one .npz
  (made once; the stage-1 run is only read)."""
  from a2p_jax.data import open_source
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.inference.pairs import stage1_pairs as make
  make(workdir, open_source('synthetic', root, 'train'), load_hand_models(None), path,
       steps='all', log=lambda m: print(m, flush=True))
  return path


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--out', default='demo_out')
  ap.add_argument('--stage1_steps', type=int, default=None,
                  help='stage-1 steps (default: a2p_jax/configs/synthetic_tiny.py)')
  ap.add_argument('--stage2_steps', type=int, default=1500,
                  help='stage-2 steps (a2p_jax/configs/diffusion_tiny.py trains 3000)')
  ap.add_argument('--stage2_pairs', type=int, default=1000,
                  help='perturbed ground-truth pairs (a2p_jax/configs/diffusion_tiny.py: 2000)')
  args = ap.parse_args(argv)
  t_start = time.time()
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  print(f'a2p-jax demo on {jax.default_backend()} ({jax.device_count()} device(s)); '
        f'writing to {out}', flush=True)

  # 1-2. Synthetic set + oracle priors (made by the stage-1 input on first use), stage 1.
  c1 = synthetic_tiny.get_config()
  if args.stage1_steps:
    c1.num_train_steps = args.stage1_steps
  w1 = os.path.join(out, 'stage1')
  print('\n== stage 1: synthetic set, oracle priors, training ==', flush=True)
  t0 = time.time()
  r1 = stage1.train_and_evaluate(c1, w1)
  t_stage1 = time.time() - t0
  root = os.path.join(w1, 'data', 'synthetic')

  # 3. Stage 2 on the same synthetic set: perturbed ground truth + stage 1's
  # own penetrating predictions (pairs (ii)); repairs pulled back to contact.
  print('\n== stage 2: pairs from stage 1\'s predictions ==', flush=True)
  t0 = time.time()
  pairs_file = stage1_pairs(w1, root, os.path.join(out, 'stage1_pairs.npz'))
  c2 = diffusion_tiny.get_config()
  c2.data.root = root
  c2.data.stage1_pairs_file = pairs_file
  c2.data.stage1_fraction = 0.5
  if args.stage2_steps:
    c2.num_train_steps = args.stage2_steps
  if args.stage2_pairs:
    c2.data.num_pairs = args.stage2_pairs
  w2 = os.path.join(out, 'stage2')
  print('\n== stage 2: penetrating pairs, diffusion training ==', flush=True)
  r2 = stage2.train_and_evaluate(c2, w2)
  t_stage2 = time.time() - t0

  # 4. Evaluation: stage 1 alone, then with stage 2's repair.
  print('\n== evaluation (synthetic test split) ==', flush=True)
  t0 = time.time()
  e1 = eval_run.evaluate_checkpoint(w1, os.path.join(out, 'eval_stage1'), root=root)
  e2 = eval_run.evaluate_checkpoint(w1, os.path.join(out, 'eval_stage1+2'), root=root,
                                    stage2=w2)
  t_eval = time.time() - t0
  with open(os.path.join(out, 'eval_stage1+2', 'report.json')) as f:
    repaired = json.load(f).get('stage2_repaired')

  table = _headline([('stage 1', e1), ('stage 1 + stage 2', e2)])
  summary = (
      f'\n== a2p-jax demo: done in {(time.time() - t_start) / 60:.1f} min '
      f'(stage 1 {t_stage1 / 60:.1f}, stage 2 {t_stage2 / 60:.1f}, eval {t_eval / 60:.1f}) ==\n'
      f'Procedural hand (NOT MANO), synthetic data; errors in mm, InterWild protocol '
      f'unless named; {e1.get("count", 0)} test images, {e1.get("count_ih", 0)} interacting; '
      f'stage 2 repaired {repaired} of them.\n\n{table}\n\n'
      f'{_loss_line("stage 1", r1, 3)}; {_loss_line("stage 2", r2, 4)}\n'
      f'stage 1 run:  {w1}  (checkpoints/, tb/: tensorboard --logdir {w1}/tb)\n'
      f'stage 2 run:  {w2}\n'
      f'reports:      {out}/eval_stage1/report.md, {out}/eval_stage1+2/report.md\n'
      f'pictures:     {out}/eval_stage1/figures/ (best, median, worst, joint_error)\n'
      f'next: python -m a2p_jax.infer IMAGE --checkpoint {w1} --stage2 {w2} --out infer_out\n')
  print(summary)
  with open(os.path.join(out, 'summary.md'), 'w') as f:
    f.write(summary)


if __name__ == '__main__':
  main()
