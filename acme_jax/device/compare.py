"""The header comparison (docs/method.md 5, 8): on the same devices and cached
features, the searched header against the standard control for NAS (a
random architecture of the same space within the same budget) and every
fixed head, each with the same final training.

Fair by construction: every arm trains the same optimizer steps on each
device (the same epochs of the same batch size), its schedule annealed to
its end, at the learning rate best on the device's validation split (the
same rule for all); the headers start from the edge's seed; evaluation runs
on whole splits, so no accuracy depends on how test samples are batched.
`fixed_best` is, per device, the fixed head best on validation.
"""
import numpy as np

from acme_jax.device import stage as device_stage

NAS, RANDOM, FIXED_BEST = 'acme_nas', 'random_arch', 'fixed_best'


def arms(kinds) -> tuple:
  """Every compared arm's name, the searched header first."""
  return (NAS, RANDOM) + tuple(kinds) + (FIXED_BEST,)


def compare(hp: device_stage.DeviceHparams, locals_, targets, seed: int):
  """Per arm and device: test accuracy, final training steps, parameters;
  and the search's child and controller steps per device."""
  searched = device_stage.search_headers(hp, locals_, targets)
  random = device_stage.search_headers(
      hp, locals_, targets, archs=device_stage.random_archs(hp, targets))
  fixed = device_stage.fixed_heads(hp, locals_, seed)
  kinds = list(fixed)
  best = [max(kinds, key=lambda k: (fixed[k]['val_accuracy'][d],
                                    -kinds.index(k)))
          for d in range(len(locals_))]
  out = {'test_accuracy': {}, 'final_train_steps': {}, 'params': {}}
  for name, headers in ((NAS, searched), (RANDOM, random)):
    out['test_accuracy'][name] = [h.result['test_accuracy'] for h in headers]
    out['final_train_steps'][name] = [h.result['final_train_steps']
                                      for h in headers]
    out['params'][name] = [h.result['nas_header_params'] for h in headers]
  for kind in kinds:
    out['test_accuracy'][kind] = fixed[kind]['test_accuracy']
    out['final_train_steps'][kind] = fixed[kind]['train_steps']
    out['params'][kind] = fixed[kind]['params']
  out['test_accuracy'][FIXED_BEST] = [fixed[k]['test_accuracy'][d]
                                      for d, k in enumerate(best)]
  out['final_train_steps'][FIXED_BEST] = [fixed[k]['train_steps'][d]
                                          for d, k in enumerate(best)]
  out['fixed_best_kind'] = best
  out['learning_rate'] = {NAS: [h.lr for h in searched],
                          RANDOM: [h.lr for h in random],
                          **{k: fixed[k]['learning_rate'] for k in kinds}}
  out['search_steps'] = {
      'child': [h.result['child_steps'] for h in searched],
      'controller': [h.result['controller_steps'] for h in searched]}
  out['mean_test_accuracy'] = {k: float(np.mean(v)) for k, v in
                               out['test_accuracy'].items()}
  return out
