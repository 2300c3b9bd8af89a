"""The one driver (`federated/algorithm.py`) runs any FederatedAlgorithm: a
method written here in a few lines, knowing nothing of ACME, gets rounds,
per-client diagnostics, ledger records and resume from the driver alone."""
from typing import Dict, NamedTuple

import numpy as np
import pytest

from acme_jax import resume
from acme_jax.federated import algorithm as algorithm_lib
from acme_jax.hierarchy.ledger import Ledger


class State(NamedTuple):
  round: int
  server: np.ndarray             # the model: a vector
  seen: Dict[int, np.ndarray]    # client id -> its last upload (added)
  steps: Dict[int, dict]         # client id -> a tree (there from init)


def mean_of_clients(data: Dict[int, np.ndarray], rounds: int, calls=None):
  """Each round every client moves the model halfway to its own mean and
  uploads it; the server averages the uploads (FedAvg on a quadratic)."""
  def init():
    return State(0, np.zeros(2, np.float32), {},
                 {c: {'n': np.int32(0), 'sum': np.zeros(2, np.float32)}
                  for c in data})

  def apply(state, clients, ledger=None):
    if calls is not None:
      calls.append(state.round)
    uploads = {}
    for c in clients:
      uploads[c] = (state.server + data[c].mean(0)) / 2
      if ledger is not None:
        ledger.send(('device', c), ('edge', 0), 'weights', uploads[c],
                    round=state.round)
    server = np.mean([uploads[c] for c in sorted(uploads)], 0)
    steps = {c: {'n': np.int32(t['n'] + 1), 'sum': t['sum'] + uploads[c]}
             if c in uploads else t for c, t in state.steps.items()}
    return (State(state.round + 1, server.astype(np.float32),
                  {**state.seen, **uploads}, steps),
            {c: {'distance': float(np.abs(uploads[c] - state.server).sum())}
             for c in clients})
  return algorithm_lib.FederatedAlgorithm('mean', rounds, init, apply,
                                          steps_per_round=1)


DATA = {c: np.random.default_rng(c).normal(c, 1, (5, 2)).astype(np.float32)
        for c in range(3)}


def test_the_driver_runs_every_round_and_keeps_each_clients_diagnostics():
  ledger = Ledger()
  state, history = algorithm_lib.run(mean_of_clients(DATA, 4), [0, 1, 2],
                                     ledger)
  # Closed form: x_{r+1} = (x_r + m) / 2 with m the mean of client means.
  m, x = np.mean([DATA[c].mean(0) for c in range(3)], 0), np.zeros(2)
  for _ in range(4):
    x = (x + m) / 2
  np.testing.assert_allclose(state.server, x, rtol=1e-6)
  assert state.round == 4
  assert sorted(history) == [0, 1, 2]
  assert all(len(h) == 4 for h in history.values())
  assert len(ledger) == 12 and {r.round for r in ledger} == {0, 1, 2, 3}


def test_a_run_from_a_given_state_does_only_the_rounds_left():
  alg = mean_of_clients(DATA, 3)
  calls = []
  first, _ = algorithm_lib.run(alg._replace(rounds=1), [0, 1, 2])
  state, history = algorithm_lib.run(
      mean_of_clients(DATA, 3, calls), [0, 1, 2], state=first)
  assert calls == [1, 2] and all(len(h) == 2 for h in history.values())
  whole, _ = algorithm_lib.run(alg, [0, 1, 2])
  np.testing.assert_array_equal(state.server, whole.server)


def test_an_interrupted_run_resumes_after_its_last_saved_round(tmp_path):
  """Killed in its fourth round, a rerun with the same Partial loads the
  state saved after round three (dict fields with keys the rounds added
  included), the diagnostics and the ledger records, runs only round four,
  and ends equal to an uninterrupted run."""
  def run(calls, partial=None):
    ledger = Ledger()
    ledger.send('cloud', ('edge', 0), 'front', 8)  # there before the rounds
    state, history = algorithm_lib.run(mean_of_clients(DATA, 4, calls),
                                       [0, 1, 2], ledger, partial)
    return state, history, ledger.to_records()

  whole = run([])

  class Stop(Exception):
    pass

  def stop_in_round_four(calls):
    class Calls(list):
      def append(self, r):
        if r == 3:
          raise Stop
        super().append(r)
    return Calls()

  partial = lambda: resume.Partial(tmp_path / 'rounds', 1, {'x': 1})
  with pytest.raises(Stop):
    run(stop_in_round_four([]), partial())
  calls = []
  resumed = run(calls, partial())
  assert calls == [3]
  np.testing.assert_array_equal(resumed[0].server, whole[0].server)
  assert sorted(resumed[0].seen) == [0, 1, 2]
  for c in range(3):
    np.testing.assert_array_equal(resumed[0].seen[c], whole[0].seen[c])
    assert resumed[0].steps[c]['n'] == whole[0].steps[c]['n'] == 4
    np.testing.assert_array_equal(resumed[0].steps[c]['sum'],
                                  whole[0].steps[c]['sum'])
  assert resumed[1] == whole[1] and resumed[2] == whole[2]
