"""Tasks: what to learn and how to test it. Torch-free.

  tasks.py    Task and Example, seeded stratified subsets
  loaders.py  load_task / load_tasks: folders (the O-LoRA CL_Benchmark layout), hf:DATASET, builtin:NAME
  builtin.py  the generated built-in tasks (topic, sentiment, sentiment_flip, animal)
  prompts.py  examples to token ids: prompt + answer, truncating only the input, from the left
"""

from adapter_hub.core.errors import DataError
from adapter_hub.data.loaders import FieldNames, load_task, load_tasks
from adapter_hub.data.tasks import DEFAULT_TEMPLATE, Example, Task

__all__ = ["DataError", "FieldNames", "load_task", "load_tasks", "DEFAULT_TEMPLATE", "Example", "Task"]
