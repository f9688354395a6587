"""Training the built-in task's tiny models on CPU (``ponder train ...``).

* :mod:`ponder.train.policy`: the policy, supervised on the task's varied correct solutions.
* :mod:`ponder.train.prm`: a PRM (or a prover's value model) on Monte-Carlo roll-out
  labels from the policy.
* :mod:`ponder.train.revision`: a revision model, the policy fine-tuned to answer again
  after wrong attempts in its context.
"""

from ponder.train.policy import PolicyTrainConfig, save_policy, train_policy

__all__ = ["PolicyTrainConfig", "save_policy", "train_policy"]
