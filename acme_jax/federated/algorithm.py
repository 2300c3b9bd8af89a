"""A federated algorithm as one value, and the one driver that runs any.

As fedjax's `FederatedAlgorithm`: `init()` gives the server side's state
(a NamedTuple whose `round` counts the rounds done), and `apply(state,
clients, ledger)` runs one round over `clients` (whatever the method's
device side runs on: ACME's `Clients`, the baselines' device list) and
returns (the next state, per-client diagnostics: client id -> dict of what
that client did in the round). The ledger, when given, gets every transfer
of the round.

`run` is the driver: it runs the rounds, keeps each client's diagnostics
round by round, and, with a `resume.Partial`, saves the state (and the
clients' own state, when they carry one) so that an interrupted run
resumes after its last saved round and ends as an uninterrupted one. ACME's
rounds in this process, the baselines and the networked edge all run
through it; a new method is a module that returns a `FederatedAlgorithm`,
with no change here.
"""
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

from acme_jax import resume
from acme_jax.hierarchy.ledger import Ledger

Diagnostics = Mapping[int, dict]


class FederatedAlgorithm(NamedTuple):
  """For `run` to save and resume it: client ids are ints, diagnostics
  and the keys of the state's dict fields are JSON values, and a dict
  entry the rounds add (absent from `init()`'s state) is one array."""
  name: str
  rounds: int
  init: Callable[[], Any]
  apply: Callable[..., Any]   # (state, clients, ledger) -> (state, Diagnostics)
  # Training steps one round takes over all clients: how `run` spaces its
  # mid-run saves (`resume.every_steps`); 0 saves only after the last round.
  steps_per_round: int = 0


def run(algorithm: FederatedAlgorithm, clients, ledger: Optional[Ledger] = None,
        partial: Optional[resume.Partial] = None, state=None,
        on_round: Optional[Callable[[Any, Diagnostics], None]] = None):
  """Runs `algorithm` from `state` (default `algorithm.init()`) until its
  last round. Returns (the final state, client id -> its diagnostics, one
  dict per round it took part in). `on_round(state, diagnostics)` is called
  after every round (the networked edge commits and logs there).

  With `partial`, the state, the clients' state (when `clients` has
  `snapshot`, `snapshot_like` and `restore`), the diagnostics and the
  ledger's records since the start are saved at the end of a round once
  `partial.every` steps have passed since the last save, and after the last
  round; a rerun resumes after the last saved round."""
  partial = partial or resume.NONE
  state = algorithm.init() if state is None else state
  history: Dict[int, List[dict]] = {}
  before = len(ledger) if ledger is not None else 0  # found at the start
  saved = partial.load(like_from_meta=lambda loop: _like(clients, state,
                                                        loop))
  if saved is not None:
    tree, loop = saved
    state = _decode(state, tree['state'], loop['state'])
    if _resumable(clients):
      clients.restore(tree['clients'], loop['clients'])
    history = {int(c): h for c, h in loop['history'].items()}
    if ledger is not None:
      for record in Ledger.from_records(loop['ledger']):
        ledger.add(record)
  while state.round < algorithm.rounds:
    state, diagnostics = algorithm.apply(state, clients, ledger)
    for c, d in diagnostics.items():
      history.setdefault(c, []).append(d)
    if on_round is not None:
      on_round(state, diagnostics)
    steps = state.round * algorithm.steps_per_round
    if partial.every and (partial.due(steps) or
                          state.round == algorithm.rounds):
      tree, meta = _encode(state)
      loop = {'round': state.round, 'state': meta, 'history': history,
              'ledger': Ledger(list(ledger or [])[before:]).to_records()}
      tree = {'state': tree}
      if _resumable(clients):
        tree['clients'], loop['clients'] = clients.snapshot()
      partial.save(tree, loop, steps)
  return state, history


def _resumable(clients) -> bool:
  return all(hasattr(clients, f) for f in
             ('snapshot', 'snapshot_like', 'restore'))


# A state is saved field by field: an int field (the round) in the JSON, a
# dict keyed by client or edge id as its keys (JSON) and its values in key
# order (arrays), any other field as its arrays.

def _encode(state):
  tree, meta = {}, {}
  for name, value in state._asdict().items():
    if isinstance(value, int):
      meta[name] = value
    elif isinstance(value, dict):
      keys = list(value)
      meta[name] = keys
      tree[name] = [value[k] for k in keys]
    else:
      tree[name] = value
  return tree, meta


def _like(clients, start, loop):
  """The saved tree's template: a dict entry present in the start state is
  shaped as it is there; one the rounds added is taken as saved."""
  if 'state' not in loop:  # `Partial.load` restarts the stage, saying why
    raise ValueError('saved by an older version of the rounds')
  state = {}
  for name, value in start._asdict().items():
    if isinstance(value, dict):
      state[name] = [value.get(k, resume.as_saved())
                     for k in loop['state'][name]]
    elif not isinstance(value, int):
      state[name] = value
  tree = {'state': state}
  if _resumable(clients):
    tree['clients'] = clients.snapshot_like(loop['clients'], loop['round'])
  return tree


def _decode(start, tree, meta):
  fields = {}
  for name, value in start._asdict().items():
    if isinstance(value, int):
      fields[name] = meta[name]
    elif isinstance(value, dict):
      fields[name] = dict(zip(meta[name], tree[name]))
    else:
      fields[name] = tree[name]
  return type(start)(**fields)
