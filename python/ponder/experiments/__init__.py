"""Experiments on the built-in task: the search methods at generation budgets.

* :mod:`ponder.experiments.methods`: each method configured for a budget in generations;
* :mod:`ponder.experiments.searchers`: the models loaded, and one method run with fresh caches;
* :mod:`ponder.experiments.demo`: ``ponder demo``, every method at a few budgets, table, plot, JSON;
* :mod:`ponder.experiments.study`: ``ponder study``, the compute-optimal scaling study in small;
* :mod:`ponder.experiments.plots`: accuracy-against-budget pictures.
"""
