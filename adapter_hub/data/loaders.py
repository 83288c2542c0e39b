"""Loading tasks from a folder (the O-LoRA CL_Benchmark layout, or .jsonl/.csv with other field names),
from a Hugging Face dataset by name, or from the built-in generators. Loading is strict: every problem
raises a DataError naming the file and the example, never a silent skip.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from adapter_hub.core.errors import DataError
from adapter_hub.data.builtin import builtin_task
from adapter_hub.data.tasks import DEFAULT_TEMPLATE, Example, Task

# Instructions for the O-LoRA CL_Benchmark tasks (its own wording, with the options spelled out so a
# model that never saw the task can answer zero-shot).
KNOWN_INSTRUCTIONS = {
    "agnews": "What is the topic of this news article?",
    "dbpedia": "What is the category of the entity described?",
    "yelp": "What is the rating of this review?",
    "amazon": "What is the rating of this review?",
    "yahoo": "What is the topic of this question?",
}


@dataclass
class FieldNames:
    text: str = "sentence"  # the O-LoRA CL_Benchmark's field names
    target: str = "label"


def load_task(
    spec: str | Path,
    *,
    name: str | None = None,
    fields: FieldNames | None = None,
    instruction: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    generation: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> Task:
    """Load a task from "builtin:<name>", "hf:<dataset>", or a folder of train/test files.

    A folder holds train.* and test.* as .json (a list of objects), .jsonl or .csv, plus optionally
    labels.json (the label set; without it, classification labels are the sorted training targets).
    generation=True treats targets as free text (scored by exact match / token F1).
    """
    spec = str(spec)
    if spec.startswith("builtin:"):
        task = builtin_task(spec.split(":", 1)[1], seed=seed)
        if name:
            task.name = name
    elif spec.startswith("hf:"):
        task = _load_hf(spec[3:], name=name, fields=fields or FieldNames(), generation=generation)
    else:
        task = _load_folder(Path(spec).expanduser(), name=name, fields=fields or FieldNames(), generation=generation)
    if instruction is not None:
        task.instruction = instruction
    if template != DEFAULT_TEMPLATE:
        task.template = template
    if "{text}" not in task.template:
        raise DataError(f"task {task.name}: the template must contain {{text}}, got {task.template!r}")
    if max_train is not None or max_test is not None:
        task = task.subset(max_train, max_test, seed)
    return task


def _load_folder(folder: Path, *, name: str | None, fields: FieldNames, generation: bool) -> Task:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such task folder (expected train/test files inside)")
    train = _read_split(folder, "train", fields)
    test = _read_split(folder, "test", fields)
    labels_path = folder / "labels.json"
    labels: list[str] | None = None
    if not generation:
        if labels_path.is_file():
            labels = _read_labels(labels_path)
        else:
            labels = sorted({ex.target for ex in train})
        for split, examples in (("train", train), ("test", test)):
            unknown = sorted({ex.target for ex in examples} - set(labels))
            if unknown:
                where = labels_path if labels_path.is_file() else f"{folder}/train.*"
                raise DataError(
                    f"{folder}: {split} labels {unknown[:5]} are not in the label set from {where} ({labels})"
                )
    task_name = name or folder.name
    label_text = f" Options: {', '.join(labels)}." if labels else ""
    instruction = KNOWN_INSTRUCTIONS.get(task_name, "Answer the question about the input.") + label_text
    return Task(task_name, train, test, labels, instruction, source=str(folder))


def _read_split(folder: Path, split: str, fields: FieldNames) -> list[Example]:
    for ext in ("json", "jsonl", "csv"):
        path = folder / f"{split}.{ext}"
        if path.is_file():
            rows = _read_rows(path, ext)
            break
    else:
        raise DataError(f"{folder}: no {split}.json, {split}.jsonl or {split}.csv")
    if not rows:
        raise DataError(f"{path}: empty dataset (no examples)")
    examples = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: example {i} is a {type(row).__name__}, expected an object")
        missing = [f for f in (fields.text, fields.target) if f not in row or row[f] is None]
        if missing:
            raise DataError(f"{path}: example {i} has no field(s) {missing} (fields present: {sorted(row)})")
        text, target = str(row[fields.text]), str(row[fields.target])
        if not target.strip():
            raise DataError(f"{path}: example {i} has an empty {fields.target!r}")
        examples.append(Example(text, target))
    return examples


def _read_rows(path: Path, ext: str) -> list[Any]:
    try:
        if ext == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
            return data
        if ext == "jsonl":
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})")
            return rows
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})")


def _read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable label list ({exc})")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise DataError(f"{path}: expected a non-empty JSON list of label strings")
    if len(set(labels)) != len(labels):
        raise DataError(f"{path}: duplicate labels")
    return labels


def _load_hf(dataset_id: str, *, name: str | None, fields: FieldNames, generation: bool) -> Task:
    try:
        import datasets
    except ImportError:
        raise DataError(f"hf:{dataset_id} needs the `datasets` package (pip install datasets) and the network")
    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # datasets raises many types when offline
        raise DataError(f"hf:{dataset_id}: could not load ({exc})")
    splits = {s: [dict(r) for r in ds[s]] for s in ds}
    if "train" not in splits or not ({"test", "validation"} & set(splits)):
        raise DataError(f"hf:{dataset_id}: needs a train and a test/validation split, has {sorted(splits)}")
    feature = ds["train"].features.get(fields.target)
    names = getattr(feature, "names", None)

    def convert(rows: list[dict]) -> list[Example]:
        out = []
        for i, row in enumerate(rows):
            if fields.text not in row or fields.target not in row:
                raise DataError(f"hf:{dataset_id}: example {i} lacks {fields.text!r}/{fields.target!r}")
            target = names[row[fields.target]] if names else str(row[fields.target])
            out.append(Example(str(row[fields.text]), target))
        return out

    train, test = convert(splits["train"]), convert(splits.get("test") or splits["validation"])
    labels = None if generation else (list(names) if names else sorted({e.target for e in train}))
    task_name = name or dataset_id.replace("/", "_")
    label_text = f" Options: {', '.join(labels)}." if labels else ""
    return Task(task_name, train, test, labels, "Answer the question about the input." + label_text,
                source=f"hf:{dataset_id}")


def load_tasks(specs: Sequence[str], **kwargs: Any) -> list[Task]:
    tasks = [load_task(s, **kwargs) for s in specs]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise DataError(f"task names must be unique in a sequence, got {names}")
    return tasks
