"""Task loading: the O-LoRA layout, JSONL/CSV, built-ins, left truncation of inputs; bad data is an error."""

from __future__ import annotations

import json

import pytest

from adapter_hub.data import DataError, FieldNames, load_task
from adapter_hub.data.builtin import BUILTIN_TASKS, builtin_task
from adapter_hub.data.prompts import encode_example, encode_examples


def write_task(folder, train, test, labels=None, ext="json"):
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        path = folder / f"{split}.{ext}"
        if ext == "json":
            path.write_text(json.dumps(rows))
        elif ext == "jsonl":
            path.write_text("\n".join(json.dumps(r) for r in rows))
        else:
            lines = ["sentence,label"] + [f"{r['sentence']},{r['label']}" for r in rows]
            path.write_text("\n".join(lines))
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels))
    return folder


ROWS = [{"sentence": "good film", "label": "positive"}, {"sentence": "bad film", "label": "negative"}]


@pytest.mark.parametrize("ext", ["json", "jsonl", "csv"])
def test_folder_formats(tmp_path, ext):
    task = load_task(write_task(tmp_path / "reviews", ROWS, ROWS, ["negative", "positive"], ext))
    assert task.name == "reviews" and task.labels == ["negative", "positive"]
    assert [e.target for e in task.train] == ["positive", "negative"] and len(task.test) == 2
    assert "Options: negative, positive." in task.instruction


def test_shared_cl_benchmark_layout():
    from pathlib import Path

    root = Path(__file__).resolve().parents[4] / "shared" / "data" / "cl_benchmark"
    if not root.is_dir():
        pytest.skip(f"the shared CL benchmark data is not at {root}")
    task = load_task(root / "agnews", max_train=100, max_test=50)
    assert (len(task.train), len(task.test)) == (100, 50)
    assert task.labels == ["World", "Sports", "Business", "Science or Technology"]
    assert task.instruction.startswith("What is the topic of this news article?")


def test_custom_fields_and_generation(tmp_path):
    rows = [{"q": "2+2", "a": "four"}, {"q": "3+3", "a": "six"}]
    task = load_task(write_task(tmp_path / "math", rows, rows), fields=FieldNames("q", "a"), generation=True)
    assert task.labels is None and task.train[0].text == "2+2" and not task.is_classification


@pytest.mark.parametrize("setup, message", [
    (lambda d: write_task(d, [], ROWS), "empty dataset"),
    (lambda d: write_task(d, ROWS, [{"sentence": "meh", "label": "neutral"}], ["negative", "positive"]),
     r"test labels \['neutral'\] are not in the label set"),
    (lambda d: write_task(d, [{"text": "x", "label": "positive"}], ROWS), r"example 0 has no field\(s\) \['sentence'\]"),
    (lambda d: write_task(d, [{"sentence": "x", "label": ""}], ROWS), "empty 'label'"),
    (lambda d: (write_task(d, ROWS, ROWS), (d / "train.json").write_text("[{oops")), "not valid JSON"),
    (lambda d: (write_task(d, ROWS, ROWS), (d / "train.json").write_bytes(b"\xff\xfe\x00bad")), "unreadable"),
    (lambda d: write_task(d, ROWS, ROWS, ["a", "a"]), "duplicate labels"),
    (lambda d: (d.mkdir(), (d / "train.json").write_text("[]")), "empty dataset"),
    (lambda d: (d.mkdir(), (d / "train.json").write_text(json.dumps(ROWS))), "no test.json"),
    (lambda d: (write_task(d, ROWS, ROWS), (d / "train.json").write_text('{"a": 1}')), "expected a JSON list"),
])
def test_bad_data_is_a_clear_error(tmp_path, setup, message):
    folder = tmp_path / "task"
    setup(folder)
    with pytest.raises(DataError, match=message):
        load_task(folder)


def test_missing_folder_and_unknown_builtin(tmp_path):
    with pytest.raises(DataError, match="no such task folder"):
        load_task(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown built-in task 'nope'"):
        load_task("builtin:nope")


def test_builtins_are_deterministic_and_seeded():
    for name in BUILTIN_TASKS:
        a, b = builtin_task(name, seed=0), builtin_task(name, seed=0)
        assert a.train == b.train and a.test == b.test and a.fingerprint() == b.fingerprint()
        assert builtin_task(name, seed=1).train != a.train
        assert {e.target for e in a.train} == set(a.labels)
    plain, flipped = builtin_task("sentiment"), builtin_task("sentiment_flip")
    assert plain.labels == flipped.labels and plain.instruction != flipped.instruction


def test_truncation_cuts_the_input_from_the_left_and_is_counted(tokenizer):
    task = load_task("builtin:sentiment")
    long = task.train[0].__class__("x" * 500 + " the end was great", "positive")
    enc = encode_example(tokenizer, task, long, max_length=96)
    assert enc.truncated and len(enc.prompt) + len(enc.target) <= 96
    text = tokenizer.decode(enc.prompt)
    assert text.startswith("Sentiment of the review?") and text.endswith("the end was great\nAnswer:")
    assert tokenizer.decode(enc.target).strip() == "positive<eos>" or tokenizer.decode(enc.target, skip_special_tokens=True).strip() == "positive"
    _, count = encode_examples(tokenizer, task, [long, task.train[1]], 96)
    assert count == 1
    with pytest.raises(DataError, match="leaves no room for the input"):
        encode_example(tokenizer, task, long, max_length=20)


def test_encoding_with_the_template_tokenised_once_equals_tokenising_it_per_example(tokenizer):
    task = load_task("builtin:topic")
    long = task.train[0].__class__("y" * 400 + " about rockets", task.train[0].target)
    examples = [*task.train[:20], long]
    batched, count = encode_examples(tokenizer, task, examples, 96)
    each = [encode_example(tokenizer, task, ex, 96) for ex in examples]  # no template given: computed per call
    whole = [tokenizer(task.template.format(instruction=task.instruction, text=ex.text))["input_ids"] for ex in task.train[:20]]
    assert batched == each and count == 1 and batched[-1].truncated
    assert [e.prompt for e in batched[:20]] == whole  # the pieces join to the untruncated prompt's own tokens


def test_subset_is_seeded(tmp_path):
    task = builtin_task("topic")
    a, b = task.subset(50, 20, seed=3), task.subset(50, 20, seed=3)
    assert a.train == b.train and len(a.train) == 50 and len(a.test) == 20 and task.subset(50, 20, seed=4).train != a.train


def test_subset_is_stratified_and_keeps_every_label():
    from collections import Counter

    from adapter_hub.data import Example, Task

    train = [Example(f"a{i}", "a") for i in range(90)] + [Example(f"b{i}", "b") for i in range(9)] + [Example("c", "c")]
    task = Task("imbalanced", train, list(train), ["a", "b", "c"])
    for n in (3, 10, 37):
        picked = task.subset(n, n, seed=5).train
        counts = Counter(ex.target for ex in picked)
        assert len(picked) == n and len(set(ex.text for ex in picked)) == n
        assert set(counts) == {"a", "b", "c"}  # the one 'c' example survives every size
        assert abs(counts["a"] - 0.9 * n) <= 1.0 + (n < 10) * 1.0  # proportional, up to rounding and the rare labels
    few = Task("few", train[:2] + train[-1:], [], ["a", "c"]).subset(2, None, seed=0).train
    assert {ex.target for ex in few} == {"a", "c"}


@pytest.mark.parametrize("make", [
    lambda d: load_task("builtin:topic", name="topics", instruction="Pick a topic.", template="{instruction}\n"
                        "Q: {text}\nA:", max_train=30, max_test=10, seed=3),
    lambda d: load_task(write_task(d / "reviews", ROWS * 5, ROWS, ["negative", "positive"]), max_train=6, seed=1),
    lambda d: load_task(write_task(d / "math", [{"sentence": "2+2", "label": "four"}] * 3,
                                   [{"sentence": "3+3", "label": "six"}]), generation=True),
])
def test_task_spec_rebuilds_the_same_task(tmp_path, make):
    """What a registered state records (Task.spec) is enough for `train --from` to rebuild the task."""
    task = make(tmp_path)
    again = load_task(**task.load_args())
    assert (again.name, again.instruction, again.template, again.labels) == \
           (task.name, task.instruction, task.template, task.labels)
    assert again.train == task.train and again.test == task.test and again.fingerprint() == task.fingerprint()
