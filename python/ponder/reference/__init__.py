"""Pure-PyTorch reference implementations: the specification and test oracle of every op."""

from ponder.reference import philox, sampling

__all__ = ["philox", "sampling"]
