"""The ENAS micro controller of the prototype (`micro_controller.py`), docs/method.md 5.

An LSTM cell walks the cell node by node. Per node it picks two inputs by
attention over the earlier entries (`w_attn_1` on each entry's anchor,
`w_attn_2` on the current state, `v_attn` to a logit), then two ops from
`w_soft` plus a learnable prior `b_soft` (10 on the first two ops) and a fixed
one (+0.25 on the first two ops, -0.25 on the rest). Input logits are
`tanh_constant * tanh(l / temperature)`, op logits use
`tanh_constant / op_tanh_reduce`. The next LSTM input is the chosen entry's
anchor (input decisions) or the op's embedding (op decisions); after each node
one more LSTM step makes that node's anchor. Decisions are sampled in the
order input_a, input_b, op_a, op_b and stored as (input_a, op_a, input_b,
op_b).

Pure functions over a params dict: `sample(params, key)` and
`log_prob(params, arch)` (teacher forcing, for the REINFORCE update) share
one body. The prototype's REINFORCE loss is NLL * (reward - baseline) with
Adam(lr, betas (0.1, 0.999), eps 1e-3).
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax.device import header as header_lib


@dataclasses.dataclass(frozen=True)
class Controller:
  num_nodes: int
  num_ops: int = header_lib.NUM_OPS
  hidden: int = 100
  temperature: float = 5.0
  tanh_constant: float = 1.1
  op_tanh_reduce: float = 2.5

  def shapes(self) -> dict:
    h, k = self.hidden, self.num_ops
    return {'encoder': (k + 1, h), 'w_ih': (h, 4 * h), 'w_hh': (h, 4 * h),
            'b_ih': (4 * h,), 'b_hh': (4 * h,), 'w_soft': (h, k),
            'b_soft': (k,), 'w_attn_1': (h, h), 'w_attn_2': (h, h),
            'v_attn': (h,)}

  def init(self, seed: int = 0) -> dict:
    """Uniform(-0.1, 0.1) everywhere but b_soft = (10, 10, 0, ...)."""
    rng = np.random.default_rng(seed)
    params = {name: jnp.asarray(rng.uniform(-0.1, 0.1, shape), jnp.float32)
              for name, shape in self.shapes().items()}
    b_soft = np.zeros(self.num_ops, np.float32)
    b_soft[:2] = 10.0
    params['b_soft'] = jnp.asarray(b_soft)
    return params

  def _fixed_prior(self):
    return jnp.asarray([0.25, 0.25] + [-0.25] * (self.num_ops - 2),
                       jnp.float32)

  def run(self, params, key=None, arch=None):
    """(arch (N, 4) int32, sum of log-probs, sum of entropies).

    Samples with `key`, or scores the given `arch` (teacher forcing). The
    nodes are one scanned body over fixed-size anchor tables (entries past
    the current node masked out), so compile time does not grow with N.
    """
    n, hidden = self.num_nodes, self.hidden
    forced = (jnp.zeros((n, 4), jnp.int32) if arch is None
              else jnp.asarray(arch, jnp.int32))
    keys = jax.random.split(jax.random.key(0) if key is None else key, n)

    def lstm(x, h, c):
      z = (x @ params['w_ih'] + params['b_ih'] + h @ params['w_hh'] +
           params['b_hh'])
      i, f, g, o = jnp.split(z, 4)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def decide(logits, valid, forced_action, step_key):
      logits = jnp.where(valid, logits, -1e9)
      logp = jax.nn.log_softmax(logits)
      action = (forced_action if arch is not None else
                jax.random.categorical(step_key, logits))
      entropy = -jnp.sum(jnp.where(valid, jnp.exp(logp) * logp, 0.0))
      return action, logp[action], entropy

    inputs = params['encoder'][0]
    h = c = jnp.zeros(hidden)
    anchors = jnp.zeros((n + 2, hidden))
    anchors_w1 = jnp.zeros((n + 2, hidden))
    for i in range(2):  # the two cell inputs: zero anchors
      h, c = lstm(inputs, h, c)
      anchors_w1 = anchors_w1.at[i].set(h @ params['w_attn_1'])
    prior = self._fixed_prior()

    def node_step(carry, xs):
      h, c, inputs, anchors, anchors_w1 = carry
      node, row, node_key = xs
      keys = jax.random.split(node_key, 4)
      visible = jnp.arange(n + 2) < node + 2
      actions, logps, entropies = [None] * 4, [], []
      for column, k in ((0, 0), (2, 1)):
        h, c = lstm(inputs, h, c)
        query = jnp.tanh(anchors_w1 + h @ params['w_attn_2'])
        logits = self.tanh_constant * jnp.tanh(
            query @ params['v_attn'] / self.temperature)
        a, lp, e = decide(logits, visible, row[column], keys[k])
        inputs = anchors[a]
        actions[column] = a
        logps.append(lp)
        entropies.append(e)
      for column, k in ((1, 2), (3, 3)):
        h, c = lstm(inputs, h, c)
        logits = (h @ params['w_soft'] + params['b_soft']) / self.temperature
        logits = (self.tanh_constant / self.op_tanh_reduce) * jnp.tanh(
            logits) + prior
        a, lp, e = decide(logits, jnp.ones(self.num_ops, bool), row[column],
                          keys[k])
        inputs = params['encoder'][a + 1]
        actions[column] = a
        logps.append(lp)
        entropies.append(e)
      h, c = lstm(inputs, h, c)
      anchors = jax.lax.dynamic_update_index_in_dim(anchors, h, node + 2, 0)
      anchors_w1 = jax.lax.dynamic_update_index_in_dim(
          anchors_w1, h @ params['w_attn_1'], node + 2, 0)
      carry = (h, c, params['encoder'][0], anchors, anchors_w1)
      return carry, (jnp.stack(actions), sum(logps), sum(entropies))

    _, (rows, logps, entropies) = jax.lax.scan(
        node_step, (h, c, inputs, anchors, anchors_w1),
        (jnp.arange(n), forced, keys))
    return rows.astype(jnp.int32), logps.sum(), entropies.sum()

  def sample(self, params, key):
    return self.run(params, key=key)

  def log_prob(self, params, arch):
    return self.run(params, arch=arch)[1]


def optimizer(learning_rate: float) -> optax.GradientTransformation:
  """The prototype's controller optimizer."""
  return optax.adam(learning_rate, b1=0.1, b2=0.999, eps=1e-3)


def reinforce_grads(controller: Controller, params, arch, advantage):
  """Gradient of NLL(arch) * advantage (the prototype's loss)."""
  return jax.grad(lambda p: -controller.log_prob(p, arch) * advantage)(params)


def sample_within(controller: Controller, params, key, fits, fallback,
                  tries: int = 10):
  """A sampled arch for which `fits(arch)` holds: the first of `tries` draws
  that fits, else `fallback` (all traced: one compiled program)."""
  archs = jax.vmap(lambda k: controller.sample(params, k)[0])(
      jax.random.split(key, tries))
  ok = jax.vmap(fits)(archs)
  first = jnp.argmax(ok)
  return jnp.where(ok.any(), archs[first], jnp.asarray(fallback, jnp.int32))


def uniform_arch(key, num_nodes: int, num_ops: int = header_lib.NUM_OPS,
                 ) -> Optional[jax.Array]:
  """A uniformly random valid arch (for tests and random-search baselines)."""
  keys = jax.random.split(key, 4 * num_nodes)
  rows = []
  for node in range(num_nodes):
    k = keys[4 * node:4 * node + 4]
    rows.append(jnp.stack([
        jax.random.randint(k[0], (), 0, node + 2),
        jax.random.randint(k[1], (), 0, num_ops),
        jax.random.randint(k[2], (), 0, node + 2),
        jax.random.randint(k[3], (), 0, num_ops)]))
  return jnp.stack(rows).astype(jnp.int32)
