"""Always-valid (time-uniform) confidence bounds, so a canary may be judged after every window.

A fixed-n confidence interval checked again and again will, sooner or later, exclude the truth by
chance; these bounds hold simultaneously for every sample size, so peeking costs nothing.

* Means and rates: the asymptotic confidence sequence of Waudby-Smith, Arnold, Wu, McAuliffe and
  Ramdas (2021, "Time-uniform central limit theory and asymptotic confidence sequences"), normal
  mixture boundary, tuned to be tightest near ``t_star`` samples::

      half_width(t) = sqrt( 2 (t s2 rho2 + 1) / (t^2 rho2) * log( sqrt(t s2 rho2 + 1) / alpha ) )
      rho2 = (-2 log alpha + log(-2 log alpha + 1)) / t_star

* Whole distributions (CDF, quantiles, KS): the time-uniform DKW inequality of Howard and Ramdas
  (2022, "Sequential estimation of quantiles with applications to A/B-testing and best-arm
  identification"), ``sup_x |F_n(x) - F(x)| <= 0.85 sqrt((log log(e n) + 0.8 log(1612 / alpha)) / n)``
  for all n at once, with probability at least 1 - alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["always_valid_p_value", "dkw_uniform_epsilon", "mean_cs_half_width"]


def mean_cs_half_width(t: float, variance: float, alpha: float, t_star: float = 1000.0) -> float:
    """Half width of the (1 - alpha) asymptotic confidence sequence for a mean after ``t`` samples."""
    if t <= 0:
        return math.inf
    la = -2.0 * math.log(alpha)
    rho2 = (la + math.log(la + 1.0)) / t_star
    s2 = max(variance, 1e-12)
    v = t * s2 * rho2 + 1.0
    return math.sqrt(2.0 * v / (t * t * rho2) * math.log(math.sqrt(v) / alpha))


def dkw_uniform_epsilon(n: float, alpha: float) -> float:
    """Time-uniform bound on the sup distance between an empirical CDF and the true one."""
    if n <= 0:
        return 1.0
    return min(1.0, 0.85 * math.sqrt((math.log(math.log(math.e * n)) + 0.8 * math.log(1612.0 / alpha)) / n))


def always_valid_p_value(excludes: Callable[[float], bool], lo: float = 1e-12, hi: float = 1.0) -> float:
    """The smallest alpha at which the confidence sequence excludes the null (bisection on log alpha).

    ``excludes(alpha)`` must be monotone: true for large alpha once true for a smaller one.
    """
    if not excludes(min(hi, 0.999999)):
        return 1.0
    if excludes(lo):
        return lo
    a, b = math.log(lo), math.log(min(hi, 0.999999))
    for _ in range(40):
        mid = 0.5 * (a + b)
        if excludes(math.exp(mid)):
            b = mid
        else:
            a = mid
    return math.exp(b)
