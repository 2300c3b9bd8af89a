"""Cloud stage pieces: importance reordering, elastic distillation, grid."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from acme_jax import training
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


def _reference_importance(model, params, data, batch_size, batches):
  """DynaBERT / the prototype's `compute_neuron_head_importance`, loop by
  loop: gradients of the batch-mean loss accumulate across batches (no
  zero_grad), and each batch adds |G(head mask)| and, per neuron,
  |sum_in w1 G(w1) + b1 G(b1)| + |sum_out w2 G(w2)|."""
  masks = vit.full_masks(model)

  def loss(p, head_mask, images, labels):
    out = model.apply({'params': p}, images, masks._replace(heads=head_mask))
    return optax.softmax_cross_entropy_with_integer_labels(
        out['logits'], labels).mean()

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  cum_p = jax.tree.map(lambda a: np.zeros(a.shape, np.float64), params)
  cum_h = np.zeros(masks.heads.shape)
  heads = np.zeros(masks.heads.shape)
  neurons = np.zeros(masks.neurons.shape)
  for b in range(batches):
    sl = slice(b * batch_size, (b + 1) * batch_size)
    g_p, g_h = grad(params, masks.heads, data.images[sl], data.labels[sl])
    cum_p = jax.tree.map(lambda c, g: c + np.asarray(g, np.float64), cum_p,
                         g_p)
    cum_h += np.asarray(g_h, np.float64)
    heads += np.abs(cum_h)
    for layer in range(model.num_layers):
      w, g = params[f'block_{layer}'], cum_p[f'block_{layer}']
      w1, b1 = np.asarray(w['fc1']['kernel']), np.asarray(w['fc1']['bias'])
      w2 = np.asarray(w['fc2']['kernel'])
      for j in range(w1.shape[1]):
        incoming = sum(w1[d, j] * g['fc1']['kernel'][d, j]
                       for d in range(w1.shape[0])) + b1[j] * g['fc1']['bias'][j]
        outgoing = sum(w2[j, d] * g['fc2']['kernel'][j, d]
                       for d in range(w2.shape[1]))
        neurons[layer, j] += abs(incoming) + abs(outgoing)
  return heads, neurons


def test_importance_is_dynabert_accumulated_over_batches(tiny_vit):
  model, params = tiny_vit
  data = _split(n=24)
  heads, neurons = importance.importance_scores(model, params, data, 8, 3)
  ref_heads, ref_neurons = _reference_importance(model, params, data, 8, 3)
  np.testing.assert_allclose(heads, ref_heads, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(neurons, ref_neurons, rtol=1e-4, atol=1e-7)


def test_head_importance_is_abs_mask_gradient(tiny_vit):
  """Independent check with finite differences on one head's mask (one
  batch: the cumulative gradient is that batch's)."""
  model, params = tiny_vit
  data = _split(n=8)
  heads, _ = importance.importance_scores(model, params, data, 8, 1)
  masks = vit.full_masks(model)

  def loss(head_mask):
    out = model.apply({'params': params}, data.images,
                      masks._replace(heads=head_mask))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
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


def _dense(model, params, width, depth, with_head=True):
  """Differentiable extraction (jnp slicing): the dense subnet's params."""
  sub = subnet.for_model(model, width, depth)
  dense = {k: params[k] for k in ('patch_embed', 'cls', 'pos_embed',
                                  'ln_final', 'head')}
  for new, (layer, h, f) in enumerate(zip(sub.layers, sub.heads,
                                          sub.neurons)):
    dense[f'block_{new}'] = subnet._slice_block(params[f'block_{layer}'], h, f)
  return model.clone(num_layers=len(sub.layers), num_heads=sub.heads,
                     mlp_dim=sub.neurons, head_dim=model.hidden_size //
                     model.num_heads), dense, sub


def _reference_stage_loss(model, params, teacher, images, depths, widths,
                          matched, lam_logits, lam_hidden):
  """Sum over the stage's subnets, each run as its own dense model: softCE
  against its teacher + embedding MSE + the MSE of each kept layer's output
  against the teacher's state at the end of the block it replaces."""
  total = 0.0
  for d in sorted(depths, reverse=True):
    for w in sorted(widths, reverse=True):
      t_model, t_params, _ = _dense(model, teacher, w if matched else 1.0, 1.0)
      t_out = t_model.apply({'params': t_params}, images)
      s_model, s_params, sub = _dense(model, params, w, d)
      out = s_model.apply({'params': s_params}, images)
      loss = lam_logits * jnp.mean(-jnp.sum(
          jax.nn.softmax(t_out['logits']) * jax.nn.log_softmax(out['logits']),
          -1))
      hidden = jnp.mean((out['embeddings'] - t_out['embeddings']) ** 2)
      ends = [nxt - 1 for nxt in sub.layers[1:]] + [model.num_layers - 1]
      for i, end in enumerate(ends):
        hidden += jnp.mean((out['hidden'][i] - t_out['hidden'][end]) ** 2)
      total += loss + lam_hidden * hidden
  return total


# The default suite keeps the masked case (the 10-minute budget); the
# static scheme's (~100 s each here) and the sliced one (~47 s cold) are
# slow, and test_the_three_schemes_agree_per_subnet covers them in the
# default suite.
@pytest.mark.parametrize('scheme,matched', [pytest.param('static', True,
                                                         marks=pytest.mark.slow),
                                            pytest.param('static', False,
                                                         marks=pytest.mark.slow),
                                            pytest.param('sliced', True,
                                                         marks=pytest.mark.slow),
                                            ('masked', True)])
def test_elastic_step_equals_a_loop_over_dense_subnets(tiny_vit, scheme,
                                                       matched):
  """Both schemes give the per-subnet losses and the summed gradient of
  running each subnet as its own dense model."""
  model, params = tiny_vit
  images = jnp.asarray(_split(n=6).images)
  depths, widths = (1.0, 1 / 3), (1.0, 0.5)
  stage = elastic.Stage.of(depths, widths, matched)
  tx = optax.sgd(1.0)  # update = -grad, so the step exposes the gradient sum
  step = elastic.make_elastic_step(model, tx, stage, training.StageHparams(
      epochs=1, learning_rate=1.0, batch_size=6, lambda_logits=1.0,
      lambda_hidden=0.5, scheme=scheme))
  teacher = jax.tree.map(lambda x: x * 1.1, params)
  new, _, losses = step(params, tx.init(params), teacher, images)
  reference = lambda p: _reference_stage_loss(  # noqa: E731
      model, p, teacher, images, depths, widths, matched, 1.0, 0.5)
  assert losses.shape == (4,)
  # Jitted: eager dispatch of the reference's many small ops is slower
  # than compiling it once.
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(reference))(params)
  np.testing.assert_allclose(float(np.sum(losses)), float(ref_loss),
                             rtol=1e-5)
  got = jax.tree.map(lambda a, b: a - b, params, new)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-5)


def test_the_three_schemes_agree_per_subnet(tiny_vit):
  model, params = tiny_vit
  images = jnp.asarray(_split(n=5).images)
  stage = elastic.Stage.of((1.0, 2 / 3, 1 / 3), (1.0, 0.75, 0.25), True)
  teacher = jax.tree.map(lambda x: x * 0.9, params)
  # Jitted as training runs them (eager dispatch is slower than compiling).
  sliced, masked, static = (
      jax.jit(lambda p, t, x, fn=fn: fn(model, p, t, x, stage, 1.0, 1.0))(
          params, teacher, images)
      for fn in (elastic.sliced_losses, elastic.masked_losses,
                 elastic.static_losses))
  np.testing.assert_allclose(sliced, masked, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(static, masked, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('scheme', [
    'masked', pytest.param('static', marks=pytest.mark.slow)])
def test_remat_keeps_losses_and_gradients(tiny_vit, scheme):
  """Recomputing subnet activations in the backward pass saves memory and
  changes no number."""
  model, params = tiny_vit
  images = jnp.asarray(_split(n=4).images)
  stage = elastic.Stage.of((1.0, 1 / 3), (1.0, 0.5), True)
  teacher = jax.tree.map(lambda x: x * 0.9, params)
  fn = {'masked': elastic.masked_losses, 'static': elastic.static_losses}[
      scheme]

  def total(p, remat):
    return jnp.sum(fn(model, p, teacher, images, stage, 1.0, 1.0, remat))

  grad = jax.jit(jax.grad(total), static_argnums=1)
  plain, remat = grad(params, False), grad(params, True)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_distillation_of_the_teacher_into_itself_is_minimal(tiny_vit):
  model, params = tiny_vit
  images = jnp.asarray(_split(n=4).images)
  out = model.apply({'params': params}, images)
  full = vit.full_masks(model)
  self_loss = elastic.distillation_loss(out, out, full.layers, 1.0, 1.0)
  # softCE(p, p) is the teacher's entropy; the hidden term is exactly 0.
  entropy = -jnp.sum(jax.nn.softmax(out['logits']) *
                     jax.nn.log_softmax(out['logits']), -1).mean()
  np.testing.assert_allclose(self_loss, entropy, rtol=1e-6)


def test_grid_accuracy_matches_a_direct_count(tiny_vit):
  model, params = tiny_vit
  data = _split(n=37)
  grid.make_count_fn.cache_clear()
  records = grid.measure_grid(model, params, data, 5, (1.0, 1 / 3), (0.5,), 16)
  # Each subnet at its own cost: the width-sliced supernet, one program for
  # both depths of the one width.
  (count_fn,) = [grid.make_count_fn(m, 5) for m in {
      subnet.static_form(model, params, subnet.for_model(model, 0.5, d))[0]
      for d in (1.0, 1 / 3)}]
  assert count_fn._cache_size() == 1
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


def test_adamw_does_not_decay_biases_or_layernorm_scales(tiny_vit):
  """The prototype's (and HF's) no_decay = ['bias', 'LayerNorm.weight']."""
  from acme_jax import training
  _, params = tiny_vit
  tx = training.adamw_with_warmup(0.1, 10, 0.0, weight_decay=0.5,
                                  clip_norm=1.0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  update = jax.jit(tx.update)  # one compile, not hundreds of eager ops
  _, state = update(zeros, tx.init(params), params)  # lr is 0 at step 0
  updates, _ = update(zeros, state, params)
  # With zero gradients only the decay moves a weight: -lr * wd * w.
  decayed = jax.tree_util.tree_map_with_path(
      lambda path, u: bool(np.any(np.asarray(u) != 0)), updates)
  for path, moved in jax.tree_util.tree_flatten_with_path(decayed)[0]:
    name = path[-1].key
    assert moved == (name not in ('bias', 'scale')), path
