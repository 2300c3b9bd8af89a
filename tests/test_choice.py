"""Edge backbone choice: budgets respected, data-aware, ties to the smaller."""
import numpy as np
import pytest

from acme_jax.edge import choice


def test_equal_budgets_different_data_get_different_backbones():
  # Two candidates of equal size: A is good at class 0, B at class 1.
  params = [100, 100, 500]
  per_class = [[0.9, 0.2], [0.2, 0.9], [0.95, 0.95]]
  hist = [[30, 2], [1, 40]]
  picks = choice.choose_backbones(params, per_class, hist, [150, 150],
                                  header_allowance=20)
  assert [p.candidate for p in picks] == [0, 1]
  # Score is the histogram-weighted accuracy, computed independently here.
  assert picks[0].score == pytest.approx((30 * 0.9 + 2 * 0.2) / 32)


def test_budget_is_respected_and_ties_go_to_the_smaller_model():
  params = [50, 80, 200]
  per_class = [[0.7], [0.7], [0.9]]
  picks = choice.choose_backbones(params, per_class, [[1], [1]], [129, 1000],
                                  header_allowance=49)
  assert picks[0].candidate == 0  # 50 and 80 tie on score, 200 + 49 > 129
  assert picks[1].candidate == 2
  for p, budget in zip(picks, [129, 1000]):
    assert p.params + 49 <= budget


def test_fallback_off_the_front_and_error_when_nothing_fits():
  params = [10, 500]
  picks = choice.choose_backbones(params, [[0.1], [0.9]], [[1]], [100], 0,
                                  on_front=[False, True])
  assert picks[0].candidate == 0 and picks[0].fallback
  with pytest.raises(ValueError, match='budget 5 fits no backbone'):
    choice.choose_backbones(params, [[0.1], [0.9]], [[1]], [5], 0)


def _config_12x12(edge_accuracy):
  from configs import default
  config = default.get_config()
  config.model.num_layers = 12
  config.model.num_heads = 12
  config.model.hidden_size = 48
  config.model.mlp_dim = 96
  config.selection.edge_accuracy = edge_accuracy
  return config


def _grid(config):
  """Trained-grid records whose accuracy grows with depth and width."""
  from acme_jax import sizes
  records = []
  for g in sizes.grid(config):
    acc = 0.3 + 0.4 * g['depth_mult'] + 0.25 * g['width_mult']
    records.append(dict(g, accuracy=acc,
                        per_class_accuracy=[acc + 0.01 * c for c in range(10)],
                        bytes=4 * g['params']))
  return records


@pytest.mark.parametrize('edge_accuracy', ['measured', 'predicted'])
def test_edges_ship_only_trained_subnets_and_the_full_one_when_it_fits(
    edge_accuracy):
  """12 layers x 12 heads: the fine grid's ratios realise nearly every
  (layers, heads) pair, yet the edge chooses among the 16 trained pairs; a
  device whose budget fits the full backbone + header allowance gets it."""
  import numpy as np
  from acme_jax import sizes
  from acme_jax.edge import stage as edge_stage
  from acme_jax.selection import stage as selection_stage
  from acme_jax.hierarchy import topology as topology_lib
  config = _config_12x12(edge_accuracy)
  records = _grid(config)
  selection = selection_stage.run(
      selection_stage.SelectionHparams.from_config(config), records,
      sizes.architecture(config, 10))
  trained = {(r['depth_mult'], r['width_mult']) for r in records}
  assert {(c['depth_mult'], c['width_mult'])
          for c in selection['candidates']} == trained
  full = max(r['params'] for r in records)
  allowance = config.system.header_allowance
  budgets = [full + allowance, full + allowance - 1,
             min(r['params'] for r in records) + allowance]
  topology = topology_lib.build_topology(1, 3, budgets)

  class Train:
    labels = np.arange(10)

  splits = [(Train, None, None)] * 3
  _, picks = edge_stage.edge_choice(edge_stage.EdgeHparams.from_config(config),
                                    selection, topology, splits, 10)
  chosen = [selection['candidates'][p.candidate] for p in picks]
  assert (chosen[0]['depth_mult'], chosen[0]['width_mult']) == (1.0, 1.0)
  assert chosen[1]['params'] < full
  for p, budget in zip(picks, budgets):
    assert p.params + allowance <= budget


def test_the_edges_front_drops_dominated_subnets():
  """The candidates' front is not all of them: a subnet larger and no more
  accurate than another is off it, and the edge never ships it while a
  front subnet fits."""
  from acme_jax import sizes
  from acme_jax.edge import stage as edge_stage
  from acme_jax.hierarchy import topology as topology_lib
  from acme_jax.selection import stage as selection_stage
  config = _config_12x12('measured')
  records = _grid(config)
  # Make the deepest, widest subnet no better than a smaller one.
  small = min(records, key=lambda r: r['params'])
  big = max(records, key=lambda r: r['params'])
  big['accuracy'] = small['accuracy']
  big['per_class_accuracy'] = list(small['per_class_accuracy'])
  selection = selection_stage.run(
      selection_stage.SelectionHparams.from_config(config), records,
      sizes.architecture(config, 10))
  on_front = [c['on_front'] for c in selection['candidates']]
  assert any(on_front) and not all(on_front)
  dominated = next(c for c in selection['candidates']
                   if c['params'] == big['params'])
  assert not dominated['on_front']
  budget = big['params'] + config.system.header_allowance
  topology = topology_lib.build_topology(1, 1, [budget])

  class Train:
    labels = np.arange(10)

  _, (pick,) = edge_stage.edge_choice(
      edge_stage.EdgeHparams.from_config(config), selection, topology,
      [(Train, None, None)], 10)
  assert selection['candidates'][pick.candidate]['on_front']
  assert not pick.fallback
