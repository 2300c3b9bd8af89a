"""The main job's closing summary on the terminal (`report.summary`)."""
from acme_jax import report


def _device(i, acc):
  return {'device': i, 'edge': i // 2, 'depth_mult': 0.5, 'width_mult': 1.0,
          'params': 1000 + i, 'header_cells': 2, 'header_params': 300,
          'total_params': 1300 + i, 'budget': 2000, 'test_accuracy': acc}


def test_the_summary_has_a_row_per_device_the_mean_and_the_ratios():
  results = {'devices': [_device(0, 0.5), _device(1, 0.75), _device(2, 1.0)],
             'ledger': {'ratio': 0.87412, 'full_model_deployment':
                        {'ratio': 0.5031}}}
  text = report.summary(results, [('report', 'w/report.md'),
                                  ('plots', 'w/pareto.png')])
  lines = text.splitlines()
  rows = [l for l in lines if l.startswith('| ') and l[2].isdigit()]
  assert [r.split('|')[1].strip() for r in rows] == ['0', '1', '2']
  assert [r.split('|')[-2].strip() for r in rows] == ['0.500', '0.750',
                                                      '1.000']
  assert '0.5 x 1' in rows[0] and '2 cells, 300' in rows[0]
  assert 'mean device test accuracy 0.750' in lines
  assert ('ledger: ACME / centralized = 0.8741 (hop-weighted); '
          'ACME / full-model deployment = 0.5031') in lines
  assert lines[-2:] == ['report:  w/report.md', 'plots:   w/pareto.png']


def test_without_a_full_model_scenario_the_ratio_stands_alone():
  results = {'devices': [_device(0, 0.25)], 'ledger': {'ratio': 1.5}}
  text = report.summary(results, [])
  assert text.splitlines()[-1] == ('ledger: ACME / centralized = 1.5000 '
                                   '(hop-weighted)')
