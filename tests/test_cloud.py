"""Cloud stage pieces: importance reordering, elastic distillation, grid."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from acme_jax.cloud import elastic, grid, importance
from acme_jax.data.base import Split
from acme_jax.models import subnet, vit


def _split(n=40, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
  labels = rng.integers(0, 5, size=n).astype(np.int32)
  return Split(images, labels, np.arange(n), 'synthetic')


def test_reordering_preserves_the_full_model(tiny_vit):
  model, params = tiny_vit
  data = _split()
  heads, neurons = importance.importance_scores(model, params, data, 16, 3)
  reordered = importance.reorder(model, params, heads, neurons)
  before = model.apply({'params': params}, data.images)
  after = model.apply({'params': reordered}, data.images)
  np.testing.assert_allclose(after['logits'], before['logits'], atol=1e-5)
  np.testing.assert_allclose(after['hidden'], before['hidden'], atol=1e-5)
  # Some layer must actually have been permuted for this test to mean anything.
  assert any(np.any(np.argsort(-heads[l], kind='stable') != np.arange(4))
             for l in range(model.num_layers))


def test_reordered_importance_is_sorted_and_smallest_width_keeps_top_heads(
    tiny_vit):
  model, params = tiny_vit
  data = _split()
  heads, neurons = importance.importance_scores(model, params, data, 16, 3)
  reordered = importance.reorder(model, params, heads, neurons)
  heads2, neurons2 = importance.importance_scores(model, reordered, data, 16, 3)
  # Importance is a property of the head, so it moves with the permutation.
  np.testing.assert_allclose(heads2, -np.sort(-heads, axis=1), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(neurons2, -np.sort(-neurons, axis=1), rtol=1e-3,
                             atol=1e-6)
  # Width 0.25 keeps 1 head per layer: the original most important one.
  kept = subnet.for_model(model, 0.25, 1.0).heads[0]
  for layer in range(model.num_layers):
    top = np.argsort(-heads[layer], kind='stable')[:kept]
    q_new = reordered[f'block_{layer}']['attn']['query']['kernel'][:, :kept]
    q_old = np.asarray(params[f'block_{layer}']['attn']['query']['kernel'])
    np.testing.assert_array_equal(q_new, q_old[:, top])


def test_head_importance_is_abs_mask_gradient(tiny_vit):
  """Independent check with finite differences on one head's mask."""
  model, params = tiny_vit
  data = _split(n=8)
  heads, _ = importance.importance_scores(model, params, data, 8, 1)
  masks = vit.full_masks(model)

  def loss(head_mask):
    out = model.apply({'params': params}, data.images,
                      masks._replace(heads=head_mask))
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
        out['logits'], data.labels))

  eps = 1e-2
  bump = jnp.zeros_like(masks.heads).at[1, 2].set(eps)
  fd = (loss(masks.heads + bump) - loss(masks.heads - bump)) / (2 * eps)
  assert abs(abs(float(fd)) - heads[1, 2]) < 1e-2 * max(1.0, heads[1, 2])


def test_block_end_weights():
  # Kept layers 0 and 2 of 4: layer 0 stands for teacher layers 0-1, layer 2
  # for 2-3, so states after layers 1 and 3 are compared.
  np.testing.assert_array_equal(
      elastic.block_end_weights(jnp.array([1., 0., 1., 0.])), [0, 1, 0, 1])
  np.testing.assert_array_equal(
      elastic.block_end_weights(jnp.ones(4)), [1, 1, 1, 1])


def test_elastic_step_sums_subnet_gradients_in_one_compile(tiny_vit):
  model, params = tiny_vit
  images = jnp.asarray(_split(n=6).images)
  masks = elastic.stage_subnets(model, (1.0, 1 / 3), (1.0, 0.5))
  tx = optax.sgd(1.0)  # update = -grad, so the step exposes the gradient sum
  step = elastic.make_elastic_step(model, tx, 1.0, 0.5)
  teacher = jax.tree.map(lambda x: x * 1.1, params)
  new, _, losses = step(params, tx.init(params), teacher, images, masks)
  assert losses.shape == (4,)

  def reference_loss(p):
    t = model.apply({'params': teacher}, images)
    total = 0.0
    for i in range(4):
      m = jax.tree.map(lambda x: x[i], masks)
      out = model.apply({'params': p}, images, m)
      total += elastic.distillation_loss(out, t, m, 1.0, 0.5)
    return total

  ref_grads = jax.grad(reference_loss)(params)
  got = jax.tree.map(lambda a, b: a - b, params, new)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
  # A different subnet list of the same length reuses the compiled step.
  step(params, tx.init(params), teacher, images,
       elastic.stage_subnets(model, (2 / 3, 1 / 3), (0.75, 0.25)))
  assert step._cache_size() == 1


def test_distillation_of_the_teacher_into_itself_is_minimal(tiny_vit):
  model, params = tiny_vit
  images = jnp.asarray(_split(n=4).images)
  out = model.apply({'params': params}, images)
  full = vit.full_masks(model)
  self_loss = elastic.distillation_loss(out, out, full, 1.0, 1.0)
  # softCE(p, p) is the teacher's entropy; the hidden term is exactly 0.
  entropy = -jnp.sum(jax.nn.softmax(out['logits']) *
                     jax.nn.log_softmax(out['logits']), -1).mean()
  np.testing.assert_allclose(self_loss, entropy, rtol=1e-6)


def test_grid_accuracy_matches_a_direct_count(tiny_vit):
  model, params = tiny_vit
  data = _split(n=37)
  records = grid.measure_grid(model, params, data, 5, (1.0, 1 / 3), (0.5,), 16)
  assert [(r['depth_mult'], r['width_mult']) for r in records] == [
      (1.0, 0.5), (1 / 3, 0.5)]
  for r in records:
    m = subnet.masks(model, subnet.for_model(model, r['width_mult'],
                                             r['depth_mult']))
    pred = np.argmax(model.apply({'params': params}, data.images, m)['logits'],
                     -1)
    assert r['accuracy'] == pytest.approx(np.mean(pred == data.labels))
    for c in range(5):
      sel = data.labels == c
      if sel.any():
        assert r['per_class_accuracy'][c] == pytest.approx(
            np.mean(pred[sel] == c))
    assert r['params'] == subnet.subnet_size(
        model, params, subnet.for_model(model, r['width_mult'],
                                        r['depth_mult']))[0]
