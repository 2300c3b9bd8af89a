"""The figures of the report (matplotlib, headless): what the tables show,
as PNGs in the workdir."""


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  return plt


def _err(cell):
  return 0.0 if cell['ci'] is None else cell['ci']


def headers_figure(headers):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  depths = [r['depth_fraction'] for r in headers['by_depth']]
  for kind in headers['average']:
    cells = [r['accuracy'][kind] for r in headers['by_depth']]
    ax.errorbar(depths, [c['mean'] for c in cells],
                yerr=[_err(c) for c in cells], marker='o', capsize=3,
                lw=2.5 if kind == 'acme_nas' else 1.2, label=kind)
  ax.set_ylim(0, 1)
  ax.set_xlabel('backbone depth fraction (full width)')
  ax.set_ylabel('mean device test accuracy')
  ax.set_title(f'Header: ACME NAS vs fixed heads '
               f'({headers["repeats"]} repeats, 95% CI)')
  ax.legend()
  return fig


def aggregation_figure(aggregation):
  plt = _plt()
  setups = list(aggregation['by_setup'])
  modes = list(aggregation['by_setup'][setups[0]])
  fig, ax = plt.subplots(figsize=(8.5, 4.5))
  width = 0.8 / len(modes)
  for m, mode in enumerate(modes):
    cells = [aggregation['by_setup'][s][mode] for s in setups]
    ax.bar([i + m * width for i in range(len(setups))],
           [c['mean'] for c in cells], width,
           yerr=[_err(c) for c in cells], capsize=2, label=mode)
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(setups))], setups)
  ax.set_ylim(0, 1)  # from 0: bar heights compare honestly
  ax.set_ylabel('mean device test accuracy')
  ax.set_title(f'Personalized architecture aggregation '
               f'({aggregation["repeats"]} repeats, 95% CI)')
  ax.legend(fontsize=7, loc='lower right')
  return fig


def pareto_figure(selection, devices):
  """Predicted accuracy vs size over the fine grid, front and device picks."""
  plt = _plt()
  grid = selection['grid']
  params = [p / 1e3 for p in grid['params']]
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  ax.scatter(params, grid['accuracy'], s=8, c='0.75', label='fine grid')
  front = [i for i, f in enumerate(grid['on_front']) if f]
  ax.scatter([params[i] for i in front], [grid['accuracy'][i] for i in front],
             s=16, c='tab:blue', label='front')
  ax.scatter([d['params'] / 1e3 for d in devices],
             [d['predicted_accuracy'] for d in devices], s=90, marker='*',
             c='tab:red', label='device picks', zorder=3)
  for d in devices:
    ax.annotate(str(d['device']), (d['params'] / 1e3, d['predicted_accuracy']),
                textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xlabel('backbone parameters (thousands)')
  ax.set_ylabel('predicted accuracy')
  ax.set_title('Pareto Front Grid and edge choices')
  ax.legend(loc='lower right')
  return fig


def baselines_figure(baselines):
  """Mean device test accuracy against hop-weighted bytes, one point per
  method with its 95% CI, one panel per setup."""
  plt = _plt()
  setups = baselines['setups']
  fig, axes = plt.subplots(1, len(setups), figsize=(3.2 * len(setups), 3.6),
                           sharey=True, squeeze=False)
  for ax, setup in zip(axes[0], setups):
    for name in baselines['methods']:
      cell = baselines['by_setup'][setup][name]
      ax.errorbar([cell['bytes'] / 1e6], [cell['accuracy']['mean']],
                  yerr=[_err(cell['accuracy'])], marker=(
                      '*' if name == 'acme' else 'o'),
                  ms=11 if name == 'acme' else 6, capsize=3, ls='none',
                  label=name)
    ax.set_xscale('log')
    ax.set_title(setup)
    ax.set_xlabel('MB (hop-weighted)')
  axes[0][0].set_ylabel('mean device test accuracy')
  axes[0][-1].legend(fontsize=7, loc='lower right')
  fig.suptitle(f"ACME and federated baselines ({baselines['repeats']} "
               'repeat(s), 95% CI)')
  fig.tight_layout()
  return fig


def cost_figure(value):
  """Training FLOPs of serving N budgets: one supernet or N models."""
  plt = _plt()
  c = value['cost']
  top = max(r['budgets'] for r in c['by_budgets'])
  n = list(range(1, top + 1))
  models = [min(k, c['distinct_shapes']) for k in n]  # shapes, at most
  ways = {'one supernet': [c['shared_flops'] + c['elastic_flops']] * len(n),
          'N distilled': [c['shared_flops'] +
                          m * c['per_model_flops']['distilled']
                          for m in models],
          'N from scratch': [m * c['per_model_flops']['scratch']
                             for m in models]}
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for label, flops in ways.items():
    ax.plot(n, flops, lw=2.5 if label == 'one supernet' else 1.5,
            label=label)
  for r in c['by_budgets']:
    ax.axvline(r['budgets'], color='0.85', lw=0.8, zorder=0)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('budgets served (N)')
  ax.set_ylabel('training FLOPs')
  ax.set_title('Cost of N budgets: one supernet or N models')
  ax.legend()
  return fig
