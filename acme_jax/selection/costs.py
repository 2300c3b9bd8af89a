"""Size, latency and energy of (depth_mult, width_mult) subnets (docs/method.md 4.2).

Two cost models share one interface, `model(depth_mult, width_mult) -> Costs`:

* `PaperCostModel`: the prototype's analytic ViT-B/16 stand-in, needed to
  reproduce its numbers: size = h * 768 + l * 3.06e6 with h = int(12 w) heads
  and l = int(12 d) layers (truncation, as the prototype).
* `ExactCostModel`: the exact parameter count of the extracted subnet of a given
  ViT, in closed form with the rounding of `models/subnet.from_multipliers`
  (h = round(H w), l = round(L d)); no parameters are materialised.

Both use the same device-profile formulas for latency and energy:
P = G_n + dG h l + p G_beta, T = L_n + dL h l, E = k P T.
"""
import abc
import dataclasses
from typing import NamedTuple, Tuple

import numpy as np

from acme_jax import choices
from acme_jax.models import shapes


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
  """Constants of the latency / energy model; defaults are the prototype's."""
  g_n: float = 100.0     # G_n: base power
  delta_g: float = 10.0  # dG: power per (head x layer)
  l_n: float = 1.0       # L_n: base latency
  delta_l: float = 0.1   # dL: latency per (head x layer)
  p: float = 128.0       # p, G_beta: only their product p G_beta enters,
  g_beta: float = 50.0   # as a constant power term
  k: float = 10.0        # k: energy scale (the prototype's epochs)

  def power(self, heads, layers) -> np.ndarray:
    work = np.asarray(heads, np.float64) * np.asarray(layers, np.float64)
    return self.g_n + self.delta_g * work + self.p * self.g_beta

  def latency(self, heads, layers) -> np.ndarray:
    work = np.asarray(heads, np.float64) * np.asarray(layers, np.float64)
    return self.l_n + self.delta_l * work

  def energy(self, heads, layers) -> np.ndarray:
    return self.k * self.power(heads, layers) * self.latency(heads, layers)


class Costs(NamedTuple):
  """Raw (unnormalised) costs, one entry per queried subnet."""
  size: np.ndarray     # parameters
  latency: np.ndarray
  energy: np.ndarray
  heads: np.ndarray    # kept heads per kept layer
  layers: np.ndarray   # kept layers


def _ratios(depth_mult, width_mult) -> Tuple[np.ndarray, np.ndarray]:
  depth = np.asarray(depth_mult, np.float64).reshape(-1)
  width = np.asarray(width_mult, np.float64).reshape(-1)
  if depth.shape != width.shape:
    raise ValueError(f'{depth.size} depth ratios but {width.size} width ratios')
  for name, values in (('depth_mult', depth), ('width_mult', width)):
    if not np.all((values >= 0) & (values <= 1)):
      raise ValueError(f'{name} must lie in [0, 1]')
  return depth, width


class CostModel(abc.ABC):
  """Maps (depth_mult, width_mult) arrays to `Costs` under a device profile."""
  profile: DeviceProfile

  @abc.abstractmethod
  def kept(self, depth: np.ndarray,
           width: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(kept heads per layer, kept layers), int arrays."""

  @abc.abstractmethod
  def size_of(self, depth: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Parameter counts."""

  def __call__(self, depth_mult, width_mult) -> Costs:
    depth, width = _ratios(depth_mult, width_mult)
    heads, layers = self.kept(depth, width)
    return Costs(size=self.size_of(depth, width),
                 latency=self.profile.latency(heads, layers),
                 energy=self.profile.energy(heads, layers),
                 heads=heads, layers=layers)


@dataclasses.dataclass(frozen=True)
class PaperCostModel(CostModel):
  """The prototype's analytic size: h * 768 + l * 3.06e6 (ViT-B/16)."""
  profile: DeviceProfile = DeviceProfile()
  full_heads: int = 12
  full_layers: int = 12
  params_per_head: float = 768.0
  params_per_layer: float = 3.06e6

  def kept(self, depth, width):
    # int() truncation, as the prototype (not subnet.py's round()).
    heads = np.trunc(self.full_heads * np.asarray(width)).astype(np.int64)
    layers = np.trunc(self.full_layers * np.asarray(depth)).astype(np.int64)
    return heads, layers

  def size_of(self, depth, width):
    heads, layers = self.kept(depth, width)
    return heads * self.params_per_head + layers * self.params_per_layer


def _check_positive(arch):
  for field in dataclasses.fields(arch):
    value = getattr(arch, field.name)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
        or value < 1:
      raise ValueError(f'architecture field {field.name} must be a positive '
                       f'integer, got {value!r}')
  if arch.hidden_size % arch.num_heads:
    raise ValueError(f'hidden_size {arch.hidden_size} is not a multiple of '
                     f'num_heads {arch.num_heads}')


@dataclasses.dataclass(frozen=True)
class ViTArchitecture:
  """What fixes a ViT supernet's parameter count (see models/vit.py)."""
  num_layers: int
  num_heads: int
  hidden_size: int
  mlp_dim: int
  patch_size: int
  channels: int
  num_tokens: int   # sequence length incl. the CLS token (pos_embed rows)
  num_classes: int

  @classmethod
  def for_images(cls, image_size: int, **fields) -> 'ViTArchitecture':
    """Derives num_tokens = (image_size / patch_size)^2 + 1 (CLS)."""
    patches_per_side = image_size // fields['patch_size']
    return cls(num_tokens=patches_per_side ** 2 + 1, **fields)

  def __post_init__(self):
    _check_positive(self)

  def embedding_params(self) -> int:
    d = self.hidden_size
    return (self.patch_size ** 2 * self.channels * d + d  # patch conv
            + d + self.num_tokens * d)                    # cls, pos_embed

  def final_params(self, with_head: bool) -> int:
    d, k = self.hidden_size, self.num_classes
    return 2 * d + ((d * k + k) if with_head else 0)      # ln_final, head


@dataclasses.dataclass(frozen=True)
class BertArchitecture:
  """What fixes a BERT supernet's parameter count (see models/bert.py). The
  backbone a device receives is the encoder without pooler or classifier."""
  num_layers: int
  num_heads: int
  hidden_size: int
  mlp_dim: int
  vocab_size: int
  max_positions: int
  type_vocab_size: int
  num_classes: int

  def __post_init__(self):
    _check_positive(self)

  def embedding_params(self) -> int:
    d = self.hidden_size
    return (self.vocab_size + self.max_positions + self.type_vocab_size) * d \
        + 2 * d                                           # + embedding LN

  def final_params(self, with_head: bool) -> int:
    d, k = self.hidden_size, self.num_classes
    return (d * d + d + d * k + k) if with_head else 0    # pooler, classifier


@dataclasses.dataclass(frozen=True)
class DecoderArchitecture:
  """What fixes a decoder supernet's parameter count (models/decoder.py).
  Its backbone keeps the final norm and the LM head (a device's language-
  model header needs them); the classifier `head` is bias-free."""
  num_layers: int
  num_heads: int
  num_kv_heads: int
  hidden_size: int
  mlp_dim: int
  vocab_size: int
  head_dim: int
  num_classes: int
  tie_word_embeddings: bool = False
  qkv_bias: bool = False

  def __post_init__(self):
    for name in ('num_layers', 'num_heads', 'num_kv_heads', 'hidden_size',
                 'mlp_dim', 'vocab_size', 'head_dim', 'num_classes'):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(
          value, bool) or value < 1:
        raise ValueError(f'architecture field {name} must be a positive '
                         f'integer, got {value!r}')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'num_heads {self.num_heads} is not a multiple of '
                       f'num_kv_heads {self.num_kv_heads}')

  def embedding_params(self) -> int:
    return self.vocab_size * self.hidden_size

  def final_params(self, with_head: bool) -> int:
    d = self.hidden_size
    lm_head = 0 if self.tie_word_embeddings else self.vocab_size * d
    return d + lm_head + (d * self.num_classes if with_head else 0)


def subnet_shape(arch, depth_mult: float,
                 width_mult: float) -> Tuple[int, int, int]:
  """(heads, neurons, layers) kept, with subnet.from_multipliers' rounding
  (a decoder's: whole KV groups, its own MLP width)."""
  layers = int(round(float(depth_mult) * arch.num_layers))
  if isinstance(arch, DecoderArchitecture):
    return shapes.decoder_width(arch.num_heads, arch.num_kv_heads,
                                arch.mlp_dim, width_mult) + (layers,)
  heads = int(round(arch.num_heads * float(width_mult)))
  neurons = int(heads / arch.num_heads * arch.mlp_dim)
  return heads, neurons, layers


def _decoder_block(arch: DecoderArchitecture, heads: int, neurons: int) -> int:
  d, hd = arch.hidden_size, arch.head_dim
  groups = heads // (arch.num_heads // arch.num_kv_heads)
  qkv = d * (heads + 2 * groups) * hd
  if arch.qkv_bias:
    qkv += (heads + 2 * groups) * hd
  return 2 * d + qkv + heads * hd * d + 3 * d * neurons


def exact_param_count(arch, depth_mult: float,
                      width_mult: float, with_head: bool = False) -> int:
  """Parameters of the extracted (width, depth) backbone, in closed form.

  The backbone a device receives has no classifier head; `with_head` adds
  the cloud's head (and BERT's pooler), e.g. for the full model.
  A point with no heads, neurons or layers keeps no encoder block (subnet.py
  cannot build it); it counts what remains: embeddings and final LN.
  """
  d = arch.hidden_size
  head_dim = d // arch.num_heads
  embeddings = arch.embedding_params()
  final = arch.final_params(with_head)
  heads, neurons, layers = subnet_shape(arch, depth_mult, width_mult)
  if heads < 1 or neurons < 1 or layers < 1:
    return embeddings + final
  if isinstance(arch, DecoderArchitecture):
    return embeddings + final + layers * _decoder_block(arch, heads, neurons)
  inner = heads * head_dim
  block = (2 * 2 * d                        # ln_attn, ln_mlp
           + 3 * (d * inner + inner)        # query, key, value
           + inner * d + d                  # out
           + d * neurons + neurons          # fc1
           + neurons * d + d)               # fc2
  return embeddings + final + layers * block


def flops_per_token(arch, depth_mult: float, width_mult: float,
                    seq_len: int, lm_head: bool = True) -> int:
  """Forward FLOPs (2 per multiply-add) per token of the extracted backbone's
  encoder at sequence length `seq_len`: q, k, v and output projections, the
  MLP, and attention's scores and weighted sum (which grow with seq_len).
  Embedding lookups cost no FLOPs; a ViT adds its patch projection, a
  decoder its LM head's projection unless `lm_head` is False (a header
  reads the tokens before it)."""
  d = arch.hidden_size
  heads, neurons, layers = subnet_shape(arch, depth_mult, width_mult)
  if isinstance(arch, DecoderArchitecture):
    # q and o per query head, k and v per group, SwiGLU's three matrices;
    # the LM head's projection is per predicted token.
    inner = heads * arch.head_dim
    kv = 2 * (heads // (arch.num_heads // arch.num_kv_heads)) * arch.head_dim
    per_layer = (2 * (2 * d * inner + d * kv + 3 * d * neurons)
                 + 4 * seq_len * inner)
    return int(max(layers, 0) * per_layer +
               (2 * d * arch.vocab_size if lm_head else 0))
  inner = heads * (d // arch.num_heads)
  per_layer = 2 * (4 * d * inner + 2 * d * neurons) + 4 * seq_len * inner
  embed = (2 * arch.patch_size ** 2 * arch.channels * d
           if hasattr(arch, 'patch_size') else 0)
  return int(embed + max(layers, 0) * per_layer)


@dataclasses.dataclass(frozen=True)
class ExactCostModel(CostModel):
  """Exact extracted-subnet size; h, l = kept heads per layer, kept layers."""
  architecture: ViTArchitecture
  profile: DeviceProfile = DeviceProfile()

  def kept(self, depth, width):
    shapes = [subnet_shape(self.architecture, dm, wm)
              for dm, wm in zip(depth, width)]
    heads = np.array([s[0] for s in shapes], np.int64).reshape(-1)
    layers = np.array([s[2] for s in shapes], np.int64).reshape(-1)
    return heads, layers

  def size_of(self, depth, width):
    return np.array([exact_param_count(self.architecture, dm, wm)
                     for dm, wm in zip(depth, width)], np.int64).reshape(-1)


COST_MODELS = choices.COST_MODELS


def make_cost_model(name: str, profile: DeviceProfile = DeviceProfile(),
                    architecture: ViTArchitecture = None) -> CostModel:
  """`paper` or `exact` (which needs the supernet's architecture)."""
  if name == 'paper':
    return PaperCostModel(profile)
  if name == 'exact':
    if architecture is None:
      raise ValueError('cost model "exact" needs the ViT architecture')
    return ExactCostModel(architecture, profile)
  raise ValueError(f'unknown cost model {name!r}; expected one of '
                   f'{COST_MODELS}')
