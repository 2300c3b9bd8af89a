"""Edge backbone choice: budgets respected, data-aware, ties to the smaller."""
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
