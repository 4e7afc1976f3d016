"""Data curation core: pools, proxies, gradient datastores, selectors, evaluation.

Plain Python, numpy, torch and numba. Nothing here imports Dagster; the assets in
``assets/`` are thin wrappers over these functions.
"""

__version__ = "0.1.0"
