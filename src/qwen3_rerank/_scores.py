"""The one conversion between the two forms of a reranker score.

Engines return the log-odds ``log(P(yes) / P(no))`` (the "yes" logit minus the "no" logit): exact
where a probability would round to 1.0, and what the model computes. The core turns it into
P("yes") with :func:`probability` once; a server that only answers probabilities is converted
back with :func:`log_odds` once, where its answer is parsed.
"""

from __future__ import annotations

import math

__all__ = ["log_odds", "probability"]


def probability(logit: float) -> float:
    """P("yes") from the log-odds: the sigmoid, without overflow for large ``|logit|``.

    Example:
        >>> probability(0.0)
        0.5
    """
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)


def log_odds(p: float) -> float:
    """The log-odds of a probability; ``-inf``/``inf`` at 0 and 1.

    Example:
        >>> log_odds(0.5)
        0.0
    """
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)
