"""Named choices that the config offers and the pure modules act on, defined once.

segr1.config validates `algorithm.adv_scale`, `algorithm.kl`, `algorithm.agg` and `reward.grammar` against these
tuples, and learner.grpo and reward_server.parse check their arguments against the same ones, so a new choice
is added in one place.
"""

from __future__ import annotations

ADVANTAGE_SCALES = ("std", "none")  # group advantages: divided by the group's std, or only centred (Dr.GRPO)
KL_KINDS = ("k1", "k2", "k3")  # per-token KL estimators
AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")  # loss over tokens and sequences
GRAMMARS = ("full", "points")  # completion grammar: think + boxes + points (RL), or points only (pre-RL)
