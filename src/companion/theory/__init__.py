"""Implicit regularization and smoothness theory: numpy/scipy only (no torch).

* :mod:`~companion.theory.least_squares`: GD on least squares and logistic regression;
* :mod:`~companion.theory.random_features`: random-feature models and the ReLU kernel;
* :mod:`~companion.theory.geometry`: the data geometry of Ma & Ying (Defs 2-4);
* :mod:`~companion.theory.smoothness`: Ma & Ying's smoothness bounds (Thms 3-7).
"""
