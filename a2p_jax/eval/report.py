"""report.json, report.md (tables like the paper's Table 1), per-sample
results and figures (per-joint error, best/median/worst overlays)."""

import json
import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from a2p_jax.data import pipeline
from a2p_jax.eval import metrics
from a2p_jax.inference import draw

JOINT_NAMES = [f'{f}{i}' for f in ('thumb', 'index', 'middle', 'ring', 'pinky')
               for i in (4, 3, 2, 1)] + ['wrist']


def _fmt(x, digits=2):
  return '-' if x is None or not np.isfinite(x) else f'{x:.{digits}f}'


# Which paper column each report key reproduces (split/subset each paper used).
KEY_TABLE = (
    ('interwild/mpjpe_all, _sh, _ih', 'MPJPE all / single / interacting',
     'InterWild (CVPR 2023) InterHand2.6M table; A2P Table 1 (MPJPE, SH-, IH-MPJPE)',
     'InterHand2.6M test, human-annotated ids (aid_human_annot_test.txt); A2P: 5 fps test'),
    ('interwild/mpvpe_all, _sh, _ih', 'MPVPE all / single / interacting',
     'InterWild InterHand2.6M and HIC tables; A2P Table 1 (MPVPE)', 'as above; HIC test'),
    ('mrrpe', 'MRRPE', 'InterWild InterHand2.6M and HIC tables; A2P Table 1',
     'as above (HIC: interacting frames)'),
    ('rrve', 'RRVE (right-hand-relative vertex error)', 'InterWild HIC table',
     'interacting frames with both GT meshes'),
    ('interwild/mpjpe_xy_all, _z_all', 'MPJPE-XY / MPJPE-Z', 'A2P Table 5 (ablation)',
     'InterHand2.6M test'),
    ('interwild/mpjpe_all on HIC', 'MPJPE (GT joints regressed from the GT meshes)',
     "A2P's HIC MPJPE (InterWild's HIC code computes none)", 'HIC test'),
    ('intaghand/mpjpe, intaghand/mpvpe', 'MPJPE / MPVPE, (left + right) / 2',
     'IntagHand (CVPR 2022), ACR, 4DHands InterHand2.6M tables',
     'InterHand2.6M v1.0_5fps test: interacting, hand_type_valid, both fits, not dark'),
    ('penvol_cm3, pendist_cm, prox_ratio', 'PenVol / PenDist / ProxRatio',
     'A2P Table 1 (plausibility)', 'interacting frames of the split scored'),
    ('contact_kept', 'share of GT-touching pairs (gap < 2 mm) predicted touching',
     "none (this project's check that a repair keeps contact)",
     'interacting frames whose GT meshes touch (count_contact)'),
)


def key_table() -> str:
  """The markdown table of KEY_TABLE (in every report.md and the README)."""
  lines = ['| report key | number | paper column | split / subset |', '|---|---|---|---|']
  lines += [f'| `{k}` | {what} | {paper} | {split} |' for k, what, paper, split in KEY_TABLE]
  return '\n'.join(lines)


def markdown(summary: Dict[str, float], meta: dict) -> str:
  s = summary
  lines = [f"# Evaluation: {meta.get('dataset', '?')} / {meta.get('split', '?')}", '',
           f"Samples scored by InterWild's rules: {s['count']} ({s['count_sh']} single-hand, "
           f"{s['count_ih']} interacting); MRRPE over {s['count_mrrpe']} frames; IntagHand's "
           f"frames: {s.get('count_intaghand', 0)}. Errors in mm, PenVol in cm^3, PenDist in "
           'cm.', '']
  if meta.get('checkpoint'):
    lines += [f"Checkpoint: `{meta['checkpoint']}`", '']
  if meta.get('predictions'):
    lines += [f"Predictions: `{meta['predictions']}`", '']
  lines += ['InterWild protocol (each hand at its wrist; joints regressed from the predicted '
            'mesh; all = mean of the SH and IH per-joint means):', '',
            '| MRRPE | MPJPE | MPVPE | IH-MPJPE | SH-MPJPE | IH-MPVPE | SH-MPVPE | RRVE |',
            '|---:|---:|---:|---:|---:|---:|---:|---:|',
            f"| {_fmt(s['mrrpe'])} | {_fmt(s.get('interwild/mpjpe_all'))} | "
            f"{_fmt(s.get('interwild/mpvpe_all'))} | {_fmt(s.get('interwild/mpjpe_ih'))} | "
            f"{_fmt(s.get('interwild/mpjpe_sh'))} | {_fmt(s.get('interwild/mpvpe_ih'))} | "
            f"{_fmt(s.get('interwild/mpvpe_sh'))} | {_fmt(s.get('rrve'))} |", '',
            'IntagHand protocol (joints of both regressed from meshes, aligned at the middle '
            'MCP, prediction scaled by the wrist-to-middle-MCP length; its frames only):', '',
            '| MPJPE | MPVPE | MPJPE right | MPJPE left | MPVPE right | MPVPE left |',
            '|---:|---:|---:|---:|---:|---:|',
            f"| {_fmt(s.get('intaghand/mpjpe'))} | {_fmt(s.get('intaghand/mpvpe'))} | "
            f"{_fmt(s.get('intaghand/mpjpe_right'))} | {_fmt(s.get('intaghand/mpjpe_left'))} | "
            f"{_fmt(s.get('intaghand/mpvpe_right'))} | {_fmt(s.get('intaghand/mpvpe_left'))} |"]
  if 'penvol_cm3' in s:
    lines += ['', '| interacting frames | PenVol (cm^3) | PenDist (cm) | ProxRatio | '
              'contact kept |', '|---|---:|---:|---:|---:|',
              f"| predictions | {_fmt(s['penvol_cm3'], 3)} | {_fmt(s['pendist_cm'], 3)} | "
              f"{_fmt(s['prox_ratio'], 3)} | {_fmt(s.get('contact_kept'), 3)} "
              f"(of {s.get('count_contact', 0)}) |"]
  lines += ['', 'Which number is which:', '', key_table(), '']
  return '\n'.join(lines)


def joint_error_plot(res: Dict[str, np.ndarray], path: str, protocol: str = 'interwild'):
  """Bar chart of the per-joint mean error (mm), right hand then left."""
  err = res[f'{protocol}/joint_err']
  cnt = np.isfinite(err).sum(0)
  means = np.where(cnt > 0, np.nansum(err, 0) / np.maximum(cnt, 1), 0.0)
  w, h, pad = 900, 320, 40
  img = Image.new('RGB', (w, h), (255, 255, 255))
  d = ImageDraw.Draw(img)
  top = max(float(means.max()), 1e-6)
  bw = (w - 2 * pad) / 42
  for j, m in enumerate(means):
    x0 = pad + j * bw
    y = h - pad - (h - 2 * pad) * m / top
    d.rectangle([x0 + 1, y, x0 + bw - 1, h - pad], fill=(200, 60, 60) if j < 21 else (60, 90, 200))
  d.line([pad, h - pad, w - pad, h - pad], fill=(0, 0, 0))
  d.text((pad, 8), f'{protocol} per-joint mean error (mm); max {top:.2f}; red right, '
         f'blue left; joints {", ".join(JOINT_NAMES[:4])} ... wrist', fill=(0, 0, 0))
  for j in (0, 20, 21, 41):
    d.text((pad + j * bw, h - pad + 4), JOINT_NAMES[j % 21], fill=(0, 0, 0))
  img.save(path)


def overlay(example: dict, verts: np.ndarray, path: str, title: str, faces=None):
  """Predicted meshes (2, V, 3) m on the example's full image: shaded, with a
  side view (`draw.save_figure`) given each hand's faces [(F, 3), (F, 3)];
  projected vertex dots without them."""
  cam = example['camera']
  if faces is None:
    draw.save_overlay(pipeline.load_image(example), verts, cam['focal'], cam['princpt'], path,
                      title)
  else:
    draw.save_figure(pipeline.load_image(example), verts, faces, cam['focal'], cam['princpt'],
                     path, title)


def repair_figures(out_dir: str, examples: Sequence[dict], before_verts: np.ndarray,
                   after_verts: np.ndarray, faces, *, titles: Optional[Sequence[str]] = None,
                   limit: int = 8) -> list:
  """figures/repair_<annot_id>.png for up to `limit` stage-2-repaired frames:
  [before: image + side view | after: image + side view] under a title.

  examples[i] (with 'camera' and its image) and before_verts[i] /
  after_verts[i] (2, V, 3) m, stage 1's and the repaired meshes, one row per
  repaired frame; faces: each hand's (F, 3). Returns the paths written."""
  os.makedirs(os.path.join(out_dir, 'figures'), exist_ok=True)
  paths = []
  for i, ex in enumerate(list(examples)[:limit]):
    image, cam = pipeline.load_image(ex), ex['camera']
    panels = [draw.figure(image, v[i], faces, cam['focal'], cam['princpt'], label=name)
              for v, name in ((before_verts, 'before stage 2'), (after_verts, 'after stage 2'))]
    annot = int(ex.get('annot_id', i))
    title = titles[i] if titles is not None else f'annotation {annot}: stage-2 repair'
    paths.append(os.path.join(out_dir, 'figures', f'repair_{annot}.png'))
    Image.fromarray(draw.titled(panels, title)).save(paths[-1])
  return paths


def write(out_dir: str, res: Dict[str, np.ndarray], meta: dict, *,
          examples: Optional[Sequence[dict]] = None,
          predict: Optional[Callable[[Sequence[dict]], dict]] = None,
          faces=None) -> Dict[str, float]:
  """Writes report.json, report.md, per_sample.npz and figures/; returns the
  summary. With `examples` and `predict`, figures of the best, median and
  worst samples (by InterWild MPJPE) are drawn: shaded meshes and a side
  view given `faces` (each hand's (F, 3), e.g. [m.faces for m in models]),
  vertex dots without."""
  os.makedirs(os.path.join(out_dir, 'figures'), exist_ok=True)
  summary = metrics.summarize(res)
  doc = {'summary': summary, 'protocols': list(metrics.PROTOCOLS), **meta}
  tmp = os.path.join(out_dir, 'report.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(doc, f, indent=1, default=float)
  os.replace(tmp, os.path.join(out_dir, 'report.json'))
  with open(os.path.join(out_dir, 'report.md'), 'w') as f:
    f.write(markdown(summary, meta))
  np.savez(os.path.join(out_dir, 'per_sample.npz'), **res)
  joint_error_plot(res, os.path.join(out_dir, 'figures', 'joint_error.png'))
  if examples is not None and predict is not None:
    err = res['interwild/joint_err']
    cnt = np.isfinite(err).sum(1)
    per = np.where(cnt > 0, np.nansum(err, 1) / np.maximum(cnt, 1), np.nan)
    ok = np.flatnonzero(np.isfinite(per))
    if len(ok):
      order = ok[np.argsort(per[ok])]
      picks = {'best': order[0], 'median': order[len(order) // 2], 'worst': order[-1]}
      pred = predict([examples[i] for i in picks.values()])
      if pred.get('verts') is not None:
        for j, (name, i) in enumerate(picks.items()):
          overlay(examples[i], pred['verts'][j],
                  os.path.join(out_dir, 'figures', f'{name}.png'),
                  f'{name}: annotation {int(res["annot_id"][i])}, MPJPE {per[i]:.1f} mm',
                  faces)
  return summary
