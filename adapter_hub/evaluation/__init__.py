"""Scoring adapters on tasks.

  config.py       EvalConfig and TaskScore (torch-free)
  scoring.py      score(): one task's test set under one or several states, "loglik" or "generate"
  decoding.py     the scorers' inner loops: label ranking in one packed pass, greedy decoding
  prefix.py       the shared instruction's KV cache, encoded once per adapter
  forward.py      model plumbing: decoder and head apart, fp32 log-probabilities, padding, routing
  text.py         exact-match normalisation and token F1
  states.py       evaluate_states(): many adapter states × many tasks, one routed pass per task
  router.py       the task router for task-free inference (prototype)
  merge_judge.py  a merged adapter against its parts: normalized accuracy with intervals
"""

from adapter_hub.evaluation.config import CURRENT, EvalConfig, TaskScore
from adapter_hub.evaluation.scoring import PerExample, score
from adapter_hub.evaluation.states import Routed, evaluate_states

__all__ = ["CURRENT", "EvalConfig", "TaskScore", "PerExample", "score", "Routed", "evaluate_states"]
