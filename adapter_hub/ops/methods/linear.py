"""Exact, factored merges: the merged ΔW is Σ w_i·ΔW_i with no approximation (rank Σ r_i).

`linear` is the weighted SUM with the weights given (default 1 each): pass weights 1/n for the
uniform average of model soups. (The `merge` continual strategy averages unless told otherwise.)"""

from __future__ import annotations

from adapter_hub.ops.arithmetic import weighted_sum_factors
from adapter_hub.ops.methods.catalogue import LAMBDA, merge_method


@merge_method("cat", kind="factored", title="Rank concatenation (PEFT's 'cat')",
              reference="PEFT add_weighted_adapter(combination_type='cat'); exact: [w_i·B_i]·[A_i]")
@merge_method("linear", kind="factored", title="Linear combination Σ w_i·ΔW_i (weights 1/n: the soup average)",
              reference="Wortsman et al. 2022, Model soups, https://arxiv.org/abs/2203.05482")
def linear(adapters, weights, modules, params):
    """Both names are the same exact sum: rank concatenation IS the exact linear combination here."""
    return weighted_sum_factors(adapters, weights, modules)


@merge_method("task_arithmetic", kind="factored", title="Task arithmetic: λ·Σ w_i·τ_i",
              reference="Ilharco et al. 2023, Editing models with task arithmetic, https://arxiv.org/abs/2212.04089",
              params=(LAMBDA,))
def task_arithmetic(adapters, weights, modules, params):
    lam = params["lambda"]
    return weighted_sum_factors(adapters, [lam * w for w in weights], modules)
