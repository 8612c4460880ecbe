"""Linear stability of SGD at a minimum: numpy/scipy only (no torch).

* :mod:`~companion.stability.sampling`: the batch-noise factor and batch enumeration;
* :mod:`~companion.stability.curvature`: :class:`~companion.stability.curvature.Curvature`,
  the one object for per-sample curvature, and its statistics;
* :mod:`~companion.stability.thresholds`: exact, necessary and sufficient thresholds;
* :mod:`~companion.stability.operators`: moment operators of linearised SGD;
* :mod:`~companion.stability.dynamics`: simulation and moment recursions;
* :mod:`~companion.stability.bounds`: inequalities implied by stability;
* :mod:`~companion.stability.optimizers`: beyond plain SGD.
"""
