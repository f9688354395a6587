"""Experiments on the built-in task: the search methods at generation budgets.

* :mod:`ponder.experiments.methods`: each method configured for a budget in generations;
* :mod:`ponder.experiments.demo`: ``ponder demo``, every method at a few budgets, table, plot, JSON.
"""
