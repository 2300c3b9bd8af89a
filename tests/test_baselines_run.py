"""experiments.baselines: the summary's statistics on constructed repeats,
and (slow) a whole tiny run: every method beside ACME on the same devices,
budgets and ledger, written to results.json, report.md and a plot."""
import json

import numpy as np
import pytest

from conftest import tiny_config
from experiments import baselines

METHODS = ('acme', 'fedavg', 'fedper', 'heterofl', 'fjord', 'depthfl')


def _run(accuracies, bytes_):
  return {'devices': [{'device': i, 'budget': 100, 'params': 50,
                       'test_accuracy': a, 'flops': 1e9}
                      for i, a in enumerate(accuracies)],
          'bytes': bytes_, 'bytes_unweighted': bytes_ // 2, 'rounds': 3,
          'seconds': 1.0, 'lr': 0.01}


def test_summary_pairs_acme_with_each_method_over_repeats():
  config = tiny_config()
  config.federated.methods = ('fedavg',)
  config.federated.setups = ('IID',)
  acme = [[0.9, 0.7], [0.8, 0.6], [0.85, 0.75]]
  fedavg = [[0.6, 0.5], [0.7, 0.4], [0.5, 0.55]]
  repeats = [{'IID': {'acme': _run(a, 1000), 'fedavg': _run(f, 4000)}}
             for a, f in zip(acme, fedavg)]
  out = baselines.summarize(config, repeats)
  diffs = [np.mean(a) - np.mean(f) for a, f in zip(acme, fedavg)]
  worst = [min(a) - min(f) for a, f in zip(acme, fedavg)]
  minus = out['acme_minus']['IID']['fedavg']
  assert minus['accuracy']['mean'] == pytest.approx(np.mean(diffs))
  assert minus['worst']['mean'] == pytest.approx(np.mean(worst))
  # t(0.975, 2) = 4.303: the 95% half-width of three paired differences.
  assert minus['accuracy']['ci'] == pytest.approx(
      4.303 * np.std(diffs, ddof=1) / np.sqrt(3), rel=1e-3)
  assert out['fedavg']['bytes_vs_acme'] == pytest.approx(4.0)
  assert out['fedavg']['mean_test_accuracy'] == pytest.approx(
      np.mean([np.mean(f) for f in fedavg]))
  table = baselines.report.baselines_table(out)
  assert '| IID | fedavg |' in table and '4.00' in table


@pytest.mark.slow
def test_baselines_run_beside_acme_on_its_budgets(tmp_path):
  config = tiny_config()
  config.federated.rounds = 2
  config.federated.setups = ('dirichlet', 'C4')
  config.federated.finetune_epochs = 1
  result = baselines.run(config, tmp_path, log=lambda *_: None)
  saved = json.loads((tmp_path / 'results.json').read_text())['baselines']
  assert saved['methods'] == list(METHODS)
  for name in METHODS:
    entry = saved[name]
    assert {'mean_test_accuracy', 'ci95', 'bytes', 'devices'} <= set(entry)
    assert len(entry['devices']) == 6
    for device in entry['devices']:
      assert {'device', 'budget', 'params', 'test_accuracy'} <= set(device)
      assert device['params'] <= device['budget']
      assert device.get('served', True) or device['test_accuracy'] == 0
      assert 0 <= device['test_accuracy'] <= 1
    assert entry['mean_test_accuracy'] == pytest.approx(np.mean(
        [d['test_accuracy'] for d in entry['devices']]))
    for setup in config.federated.setups:
      assert saved['by_setup'][setup][name]['bytes'] > 0
  # FedPer sends FedAvg's model less its head; HeteroFL less than the whole
  # model to devices with small budgets.
  by = saved['by_setup']['dirichlet']
  assert by['fedper']['bytes'] < by['fedavg']['bytes']
  assert (tmp_path / 'baselines.png').stat().st_size > 0
  assert '## ACME and the federated baselines' in (
      tmp_path / 'report.md').read_text()
  # A rerun loads every (repeat, setup) it finished.
  again = baselines.run(config, tmp_path, log=lambda *_: None)
  assert json.dumps(again, sort_keys=True) == json.dumps(result,
                                                         sort_keys=True)
