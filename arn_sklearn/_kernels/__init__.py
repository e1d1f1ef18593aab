"""Numerical kernels: arrays and an array namespace ``xp`` in, arrays out.

Assignment (similarity, softmax, top-k), lifting, second moments through
anchor pairs, dense linear algebra, network forward/backward and explanations.
They know nothing of the estimator API.
"""
