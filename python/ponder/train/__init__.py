"""Training the built-in task's tiny models on CPU (``ponder train ...``).

* :mod:`ponder.train.policy`: the policy, supervised on the task's varied correct solutions.
"""

from ponder.train.policy import PolicyTrainConfig, save_policy, train_policy

__all__ = ["PolicyTrainConfig", "save_policy", "train_policy"]
