"""Adapter arithmetic on factors: exact add/scale/negate/subtract/linear/task arithmetic, merge methods
(TIES, DARE, magnitude pruning, in dense or core space), factored-SVD rank reduction, and `compose`.

Every op returns a new LoraAdapter whose `provenance` records its inputs (registry refs or digests),
the method and its parameters, so `Registry.register` writes merged_from / reduced_from lineage.
"""

from adapter_hub.ops.arithmetic import (
           add,
           linear,
           negate,
           scale,
           subtract,
           task_arithmetic,
)
from adapter_hub.ops.compose import ComposeSyntaxError, compose, parse
from adapter_hub.ops.merge import merge, method_params
from adapter_hub.ops.methods import METHODS
from adapter_hub.ops.svd import factored_svd, reduce_rank

__all__ = ["add", "scale", "negate", "subtract", "linear", "task_arithmetic", "merge", "reduce_rank", "compose",
           "method_params", "parse", "factored_svd", "METHODS", "ComposeSyntaxError"]
