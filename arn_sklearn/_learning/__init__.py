"""Learning anchors and softness: the optimisers of the learned solvers."""
