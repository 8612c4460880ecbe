"""The heavy sweeps of Part IV, one module per experiment (see ``run.py`` and
``companion.book.experiments``)."""
