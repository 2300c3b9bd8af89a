"""How a width multiplier keeps a decoder's attention and MLP: pure
arithmetic, shared by `models/subnet.py` (which slices) and
`selection/costs.py` (which counts) so the two cannot disagree."""


def kept_groups(num_kv_heads: int, width_mult: float) -> int:
  """A decoder keeps round(G * w) KV groups, at least one."""
  return max(1, int(round(num_kv_heads * float(width_mult))))


def decoder_width(num_heads: int, num_kv_heads: int, mlp_dim: int,
                  width_mult: float):
  """(query heads, MLP neurons) a decoder keeps at width `width_mult`:
  whole KV groups (their query heads move with them, so the GQA ratio
  holds) and round(F * w) SwiGLU neurons, at least one."""
  group = num_heads // num_kv_heads
  return (kept_groups(num_kv_heads, width_mult) * group,
          max(1, int(round(mlp_dim * float(width_mult)))))
