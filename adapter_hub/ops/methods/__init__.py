"""Merge methods, one module per family, registered by name in the catalogue (catalogue.METHODS):

  linear.py    exact on factors: linear, task_arithmetic, cat
  masked.py    element-wise on ΔW or core matrices: TIES, DARE, magnitude pruning
  spectral.py  SVD-based, from the factors: Iso-C, Iso-CTS, TSV, KnOTS-TIES
"""

from adapter_hub.ops.methods import linear, masked, spectral  # noqa: F401  (importing registers their methods)
from adapter_hub.ops.methods.catalogue import (
    METHODS,
    MergeMethod,
    Param,
    get_method,
    merge_method,
)

__all__ = ["METHODS", "MergeMethod", "Param", "get_method", "merge_method"]
