"""The ledger counts pytree bytes, weights them by hops, and compares with centralized."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from acme_jax.hierarchy import ledger as L

DTYPES = [np.float32, np.float16, np.int8, np.int64]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 5), max_size=3),
                          st.sampled_from(DTYPES)), max_size=5))
def test_pytree_bytes_equal_the_arrays_nbytes(specs):
  arrays = [np.zeros(shape, dtype) for shape, dtype in specs]
  tree = {'layers': arrays, 'extra': {'n': np.arange(3, dtype=np.int32)}}
  ledger = L.Ledger()
  record = ledger.send(('device', 0), ('edge', 0), 'header', tree)
  assert record.bytes == sum(a.nbytes for a in arrays) + 12


def test_jax_arrays_and_byte_counts():
  ledger = L.Ledger()
  tree = (jnp.ones((4, 4), jnp.bfloat16), jnp.ones(3, jnp.float32))
  assert ledger.send('cloud', ('edge', 1), 'backbone', tree).bytes == 32 + 12
  assert ledger.send(('edge', 1), ('device', 2), 'front', 1000).bytes == 1000


def test_hops_follow_from_the_tiers():
  ledger = L.Ledger()
  assert ledger.send(('device', 0), 'cloud', 'metrics', 8).hops == 2
  assert ledger.send('cloud', ('device', 0), 'backbone', 8).hops == 2
  assert ledger.send('cloud', ('edge', 0), 'front', 8).hops == 1
  assert ledger.send(('edge', 0), ('device', 3), 'backbone', 8).hops == 1


def test_hop_weighting_and_totals():
  ledger = L.Ledger()
  ledger.send(('device', 0), ('edge', 0), 'importance', 100, round=1)
  ledger.send(('edge', 0), ('device', 0), 'importance', 100, round=1)
  ledger.send('cloud', ('device', 0), 'backbone', 1000, hops=2)
  assert ledger.total() == 100 + 100 + 2000
  assert ledger.total(weighted=False) == 1200
  assert ledger.by_kind() == {'importance': 200, 'backbone': 2000}
  assert ledger.by_kind(weighted=False) == {'importance': 200, 'backbone': 1000}
  assert ledger.by_direction() == {('device', 'edge'): 100, ('edge', 'device'): 100,
                                   ('cloud', 'device'): 2000}
  assert ledger.by_link()[(('cloud', 0), ('device', 0))] == 2000
  assert ledger.summary()['by_direction']['cloud->device'] == 2000


@pytest.mark.parametrize('call,match', [
    (lambda l: l.send('cloud', ('edge', 0), 'gossip', 1), 'unknown transfer kind'),
    (lambda l: l.send('cloud', ('server', 0), 'front', 1), 'unknown tier'),
    (lambda l: l.send('edge', ('device', 0), 'front', 1), 'omit its id'),
    (lambda l: l.send('cloud', ('edge', 0), 'front', 1, hops=0), 'hops'),
    (lambda l: l.send('cloud', ('edge', 0), 'front', 1, hops=2), 'hops=1'),
    (lambda l: l.send(('device', 0), 'cloud', 'metrics', 1, hops=1),
     'hops=2'),
    (lambda l: l.send('cloud', ('edge', 0), 'front', -1), '>= 0'),
    (lambda l: l.send(('edge', 0), ('edge', 0), 'front', 1), 'two different'),
])
def test_bad_sends_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call(L.Ledger())


def test_centralized_comparison_on_a_hand_computed_example():
  # 2 devices under one edge; raw data 1000 and 3000 bytes; models 400 bytes each.
  central = L.centralized_ledger([0, 1], [1000, 3000], 400)
  assert central.total() == 2 * (1000 + 3000) + 2 * (400 + 400)   # 9600
  acme = L.Ledger()
  acme.send('cloud', ('edge', 0), 'front', 50)                   # 50
  # The edge relays the backbone: the first leg is network volume only.
  acme.send('cloud', ('edge', 0), 'backbone', 200, final=False)  # 200
  for device in (0, 1):
    acme.send(('edge', 0), ('device', device), 'backbone', 200)  # 2 x 200
    acme.send(('device', device), ('edge', 0), 'histogram', 40)  # 2 x 40
  acme.send(('edge', 0), 'cloud', 'metrics', 10)                 # 10
  result = L.compare(acme, central)
  assert result['acme']['total'] == 740
  assert result['centralized']['total'] == 9600
  assert result['ratio'] == pytest.approx(740 / 9600)
  # End to end, both sides count a relayed payload once: the centralized
  # upload (2 hops) once, the backbone once per device that receives it.
  assert result['acme']['total_unweighted'] == 540
  assert result['centralized']['total_unweighted'] == 4800
  assert result['ratio_unweighted'] == pytest.approx(540 / 4800)
  assert result['centralized']['by_kind']['raw_data'] == 8000
  assert result['centralized']['by_kind']['weights'] == 1600
  assert result['centralized']['by_kind']['backbone'] == 0
  assert result['acme']['by_kind']['backbone'] == 600
  assert result['acme']['by_kind_unweighted']['backbone'] == 400
  assert result['acme']['by_kind']['raw_data'] == 0
  assert result['acme_raw_data_off_device'] == 0
  json.dumps(result)  # JSON-ready


def test_centralized_accepts_a_mapping_and_checks_lengths():
  central = L.centralized_ledger([3, 5], {3: 10, 5: 20}, [1, 2])
  assert central.by_link(weighted=False)[(('device', 5), ('cloud', 0))] == 20
  with pytest.raises(ValueError, match='1 model_bytes for 2 devices'):
    L.centralized_ledger([3, 5], 10, [1])
  with pytest.raises(ValueError, match='no bytes'):
    L.compare(L.Ledger(), L.centralized_ledger([], 1, 1))


def test_records_round_trip_through_json():
  ledger = L.Ledger()
  ledger.send(('device', 2), ('edge', 1), 'signature', np.zeros(7, np.float32),
              round=3)
  ledger.send('cloud', ('device', 2), 'weights', 99, hops=2)
  text = json.dumps(ledger.to_records())
  back = L.Ledger.from_records(json.loads(text))
  assert back.records == ledger.records
  with pytest.raises(ValueError, match='unknown transfer kind'):
    L.Ledger.from_records([dict(ledger.to_records()[0], kind='bogus')])


def test_edges_receive_each_backbone_once_reference_included():
  from acme_jax.hierarchy import topology as topology_lib
  from acme_jax.hierarchy import transfers
  topology = topology_lib.build_topology(2, 3, 10**6)
  ledger = L.Ledger()
  # Edge 0's devices share backbone 'a'; device 3 has 'ref' itself.
  device_backbone = {0: 'a', 1: 'a', 2: 'b', 3: 'ref', 4: 'b', 5: 'b'}
  transfers.deliver_backbones(ledger, topology, 8, {d: 4 for d in range(6)},
                              {'a': 100, 'b': 300, 'ref': 50},
                              device_backbone, reference='ref')
  to_edge = [(r.dst_id, r.bytes) for r in ledger
             if r.kind == 'backbone' and r.dst_tier == 'edge']
  assert sorted(to_edge) == [(0, 50), (0, 100), (0, 300), (1, 50), (1, 300)]
  assert all(not r.final for r in ledger
             if r.kind == 'backbone' and r.dst_tier == 'edge')
  per_device = {}
  for r in ledger:
    if r.kind == 'backbone' and r.dst_tier == 'device':
      per_device.setdefault(r.dst_id, []).append(r.bytes)
  # Each device gets its backbone and the reference, once each.
  assert per_device == {0: [100, 50], 1: [100, 50], 2: [300, 50], 3: [50],
                        4: [300, 50], 5: [300, 50]}


def test_full_model_deployment_is_a_second_labelled_scenario():
  """Every device receiving the full backbone (2 hops): ACME's bytes over
  that scenario's, apart from the centralized ratio."""
  acme = L.Ledger()
  acme.send('cloud', ('edge', 0), 'backbone', 300, final=False)
  acme.send(('edge', 0), ('device', 0), 'backbone', 300)
  acme.send(('edge', 0), ('device', 1), 'backbone', 300)
  central = L.centralized_ledger([0, 1], 1000, 500)
  full = L.full_model_ledger([0, 1], 4000)
  summary = L.compare(acme, central, full)
  scenario = summary['full_model_deployment']
  assert scenario['total'] == 2 * 2 * 4000
  assert scenario['ratio'] == pytest.approx(900 / 16000)
  assert scenario['ratio_unweighted'] == pytest.approx(600 / 8000)
  assert summary['ratio'] == pytest.approx(900 / (2 * (2000 + 1000)))
  assert 'full_model_deployment' not in L.compare(acme, central)
