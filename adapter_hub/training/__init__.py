"""Training one task.

  config.py   TrainConfig (every default with its reason) and TrainResult
  batches.py  length-bucketed batches, collation with the answer positions
  loss.py     answer-only loss: the head at the answer positions, the shared instruction run once
  plateau.py  until = "plateau": the dev checks, when to stop, the best state put back
  loop.py     train_on (what strategies call) and train_task (the one-task path)
"""

from adapter_hub.training.config import TrainConfig, TrainResult
from adapter_hub.training.loop import train_on, train_task

__all__ = ["TrainConfig", "TrainResult", "train_on", "train_task"]
