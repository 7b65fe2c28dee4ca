"""The report's statistics against textbook values."""

import math

import pytest

from kvprobe.report.stats import summarise, t_quantile, t_two_sided_p, welch_t_test


@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042), (1000, 1.962)])
def test_t_quantiles_match_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_two_sided_p_values():
    assert t_two_sided_p(2.262, 9) == pytest.approx(0.05, abs=5e-4)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)


def test_summary_mean_sd_and_interval():
    s = summarise([10.0, 12.0, 14.0, None])
    assert s.n == 3 and s.mean == 12.0 and s.sd == pytest.approx(2.0)
    half = 4.303 * 2.0 / math.sqrt(3)
    assert s.ci95_low == pytest.approx(12.0 - half, abs=1e-3) and s.ci95_high == pytest.approx(12.0 + half, abs=1e-3)
    assert summarise([5.0]).sd is None and summarise([]).mean is None


def test_welch_matches_a_worked_example():
    # Welch's worked example (two samples of unequal variance); reference values from R's t.test.
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    result = welch_t_test(a, b)
    assert result.t == pytest.approx(-2.46, abs=0.01)
    assert result.df == pytest.approx(24.99, abs=0.05)
    assert result.p_value == pytest.approx(0.021, abs=0.001)


def test_welch_needs_two_values_a_side():
    assert welch_t_test([1.0], [2.0, 3.0]).p_value is None


def test_welch_gives_the_difference_with_its_interval():
    a, b = [10.0, 11.0, 12.0], [7.0, 8.0, 10.0]
    result = welch_t_test(a, b)
    se = math.sqrt(1.0 / 3 + (7 / 3) / 3)
    assert result.difference == pytest.approx(8 / 3) and result.se == pytest.approx(se)
    half = t_quantile(0.975, result.df) * se
    assert (result.ci95_low, result.ci95_high) == pytest.approx((8 / 3 - half, 8 / 3 + half))
    assert result.ci95_low < result.difference < result.ci95_high
