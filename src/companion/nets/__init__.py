"""Torch models meet the theory: data, models, losses, per-sample derivatives, diagnosis.

Importing this sub-package imports torch; ``import companion`` does not.
"""
