"""Masked supernet vs extracted dense subnets, SubnetConfig rules, exact sizes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from acme_jax.models import subnet


def test_multipliers_follow_acme_rules_on_vit_b():
  # docs/method.md 3.1 on ViT-B (12 layers, 12 heads, 3072 neurons), worked by hand.
  s = subnet.from_multipliers(12, 12, 3072, width_mult=0.25, depth_mult=0.5)
  assert s.layers == (0, 2, 4, 6, 8, 10)      # floor(i / 0.5)
  assert s.heads == (3,) * 6                  # round(12 * 0.25)
  assert s.neurons == (768,) * 6              # int(3/12 * 3072)
  s = subnet.from_multipliers(12, 12, 3072, width_mult=0.75, depth_mult=0.75)
  assert s.layers == (0, 1, 2, 4, 5, 6, 8, 9, 10)  # floor(i / 0.75), 9 layers
  assert s.heads == (9,) * 9 and s.neurons == (2304,) * 9
  # Widths snap to whole heads: 0.3 * 12 = 3.6 -> 4 heads -> 4/12 of neurons.
  s = subnet.from_multipliers(12, 12, 3072, width_mult=0.3, depth_mult=1.0)
  assert s.heads[0] == 4 and s.neurons[0] == 1024


def closed_form_count(d, c, p, classes, tokens, layers):
  """Parameters of a ViT whose kept layers have (heads, head_dim, neurons)."""
  total = p * p * c * d + d               # patch embedding conv
  total += d + tokens * d                 # cls + positions
  for heads, hd, f in layers:
    total += 2 * 2 * d                    # two LayerNorms
    total += 3 * (d * heads * hd + heads * hd)  # q, k, v
    total += heads * hd * d + d           # out projection
    total += d * f + f + f * d + d        # MLP
  total += 2 * d + d * classes + classes  # final LN + classifier
  return total


random_subnets = st.tuples(
    st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True).map(sorted),
    st.lists(st.integers(1, 4), min_size=3, max_size=3),
    st.lists(st.integers(1, 24), min_size=3, max_size=3),
    st.integers(0, 2**31 - 1))


@functools.lru_cache(maxsize=None)
def _masked_forward(model):
  return jax.jit(lambda p, x, m: model.apply({'params': p}, x, m))


@settings(max_examples=6, deadline=None)
@given(random_subnets)
def test_extract_matches_masked_supernet(tiny_vit, case):
  model, params = tiny_vit
  layers, heads, neurons, seed = case
  cfg = subnet.SubnetConfig(tuple(layers), tuple(heads[:len(layers)]),
                            tuple(neurons[:len(layers)]))
  images = jax.random.normal(jax.random.key(seed), (3, 8, 8, 1))
  # Jitted: the masked program compiles once for every example (masks are
  # data); eager dispatch of either model is slower than its compile.
  masked = _masked_forward(model)(params, images, subnet.masks(model, cfg))
  sub_model, dense = subnet.extract(model, params, cfg, with_head=True)
  dense_out = jax.jit(lambda p, x: sub_model.apply({'params': p}, x))(
      dense, images)
  np.testing.assert_allclose(dense_out['logits'], masked['logits'], atol=1e-5)
  # The hidden state after kept layer j equals the masked state there.
  np.testing.assert_allclose(dense_out['hidden'],
                             masked['hidden'][np.array(cfg.layers)], atol=1e-5)
  expected = closed_form_count(16, 1, 4, 5, 5, [
      (h, 4, f) for h, f in zip(cfg.heads, cfg.neurons)])
  assert subnet.param_count(dense) == expected
  assert subnet.param_bytes(dense) == 4 * expected
  # What a device receives: the same backbone without the cloud's head.
  backbone_model, backbone = subnet.extract(model, params, cfg)
  assert subnet.param_count(backbone) == expected - (16 * 5 + 5)
  # Traced, not compiled: only the output's structure is asked.
  assert 'logits' not in jax.eval_shape(
      lambda p, x: backbone_model.apply({'params': p}, x), backbone, images)


def test_one_compiled_program_serves_every_subnet(tiny_vit):
  model, params = tiny_vit
  forward = jax.jit(lambda p, x, m: model.apply({'params': p}, x, m)['logits'])
  images = jnp.ones((2, 8, 8, 1))
  outputs = []
  for w in (0.25, 0.5, 0.75, 1.0):
    for d in (1 / 3, 2 / 3, 1.0):
      outputs.append(forward(params, images, subnet.masks(
          model, subnet.for_model(model, w, d))))
  assert forward._cache_size() == 1
  assert len({np.asarray(o).tobytes() for o in outputs}) == len(outputs)


def test_vmap_over_stacked_subnets_equals_one_by_one(tiny_vit):
  model, params = tiny_vit
  cfgs = [subnet.for_model(model, w, d) for w, d in
          [(1.0, 1.0), (0.5, 2 / 3), (0.25, 1 / 3)]]
  stacked = subnet.stack_masks([subnet.masks(model, c) for c in cfgs])
  images = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
  forward = lambda m: model.apply({'params': params}, images, m)[  # noqa
      'logits']
  batched = jax.jit(jax.vmap(forward))(stacked)
  for i, cfg in enumerate(cfgs):
    single = jax.jit(forward)(subnet.masks(model, cfg))
    np.testing.assert_allclose(batched[i], single, atol=1e-6)


def test_dropped_layer_is_identity(tiny_vit):
  model, params = tiny_vit
  images = jax.random.normal(jax.random.key(4), (2, 8, 8, 1))
  m = subnet.masks(model, subnet.SubnetConfig((0, 2), (4, 4), (24, 24)))
  hidden = model.apply({'params': params}, images, m)['hidden']
  np.testing.assert_array_equal(hidden[1], hidden[0])


@pytest.mark.parametrize('bad', [
    dict(layers=(), heads=(), neurons=()),
    dict(layers=(1, 0), heads=(1, 1), neurons=(1, 1)),
    dict(layers=(0,), heads=(0,), neurons=(3,)),
    dict(layers=(0, 1), heads=(1,), neurons=(1, 1)),
])
def test_invalid_subnet_configs_are_rejected(bad):
  with pytest.raises(ValueError):
    subnet.SubnetConfig(**bad)


def test_header_features_are_the_last_hidden_state_before_the_final_norm(
    tiny_vit):
  """The prototype's header reads HF `hidden_states[-1]` (pre final
  LayerNorm) of its backbone; the masked supernet gives exactly that."""
  from acme_jax.device import features
  model, params = tiny_vit
  cfg = subnet.for_model(model, 0.5, 2 / 3)
  images = np.asarray(jax.random.normal(jax.random.key(0), (3, 8, 8, 1)))
  sub_model, dense = subnet.extract(model, params, cfg)
  out = sub_model.apply({'params': dense}, images)
  masked = model.apply({'params': params}, images, subnet.masks(model, cfg))
  np.testing.assert_allclose(masked['hidden'][-1], out['hidden'][-1],
                             atol=1e-5)
  np.testing.assert_allclose(
      features.backbone_tokens(model, params, cfg, images), out['hidden'][-1],
      atol=1e-5)
  np.testing.assert_allclose(
      features.backbone_tokens(model, params, cfg, images,
                               source='final_norm'), out['tokens'], atol=1e-5)


def test_features_batched_across_devices_equal_one_device_at_a_time(tiny_vit):
  """Devices grouped by backbone share one stream of batches; each gets the
  features its own backbone gives its own data, split by split."""
  from acme_jax.data.base import Split
  from acme_jax.device import features
  from acme_jax.device import stage as device_stage
  from configs import default
  model, params = tiny_vit
  config = default.get_config()
  rng = np.random.default_rng(0)

  def split(n):
    return Split(rng.normal(0, 1, (n, 8, 8, 1)).astype(np.float32),
                 rng.integers(0, 3, n).astype(np.int32), np.arange(n))

  subs = [subnet.for_model(model, w, d) for w, d in
          ((0.5, 2 / 3), (1.0, 1.0), (0.5, 2 / 3), (0.25, 1 / 3))]
  device_splits = [(split(5 + d), split(2), split(3 + d)) for d in range(4)]
  hp = device_stage.DeviceHparams.from_config(config, 3)
  together = device_stage.local_features(hp, model, params, subs,
                                         device_splits)
  grid = features.patch_grid(model, (8, 8, 1))
  for sub, splits, got in zip(subs, device_splits, together):
    alone = [features.backbone_tokens(model, params, sub, s.images)
             for s in splits]
    for mine, theirs in zip((got.x_train, got.x_val, got.x_test), alone):
      np.testing.assert_allclose(mine, features.token_grid(theirs, grid),
                                 atol=1e-6)
    np.testing.assert_array_equal(got.y_test, splits[2].labels)
    np.testing.assert_allclose(got.cls_train, alone[0][:, 0], atol=1e-6)
