"""Learning anchors: variable projection, minibatch training, optimisers."""
