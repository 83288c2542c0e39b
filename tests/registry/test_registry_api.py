"""Registry Python API: versions, references, aliases, tags, lineage, search, export/import, deletion,
and bad input that must leave the registry exactly as it was."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from registry import Registry
from registry.errors import (
    AdapterFormatError,
    DuplicateVersionError,
    NameError_,
    NonFiniteError,
    RefError,
    RegistryError,
)


def test_versions_count_up_per_task_and_latest_is_computed(reg, adapter_dir):
    refs = [reg.register(adapter_dir(i), task="agnews").ref for i in range(3)]
    assert refs == ["agnews:1", "agnews:2", "agnews:3"]
    assert reg.register(adapter_dir(10), task="yelp").ref == "yelp:1"
    assert reg.get("agnews").ref == "agnews:3"
    reg.delete("agnews:3")
    assert reg.get("agnews").ref == "agnews:2"  # latest *live* version
    assert reg.register(adapter_dir(4), task="agnews").ref == "agnews:4"  # 3 is never reused
    assert [v.number for v in reg.versions("agnews")] == [1, 2, 4]
    assert [v.number for v in reg.versions("agnews", include_deleted=True)] == [1, 2, 3, 4]


def test_recorded_fields(reg, adapter_dir):
    v = reg.register(adapter_dir(0, r=4), task="t", metadata={"lr": 1e-3, "steps": [1, 2]}, tags={"stage": "dev"},
                     note="first")
    assert v.digest.startswith("sha256:") and len(v.digest) == 71
    assert (v.rank, v.alpha, v.base_model, v.base_fingerprint) == (4, 8.0, "tiny-llama", "sha256:" + "ab" * 32)
    assert v.metadata == {"lr": 1e-3, "steps": [1, 2]} and v.tags == {"stage": "dev"} and v.note == "first"
    assert len(v.target_modules) == 3 and v.size_bytes > 0 and "@" in v.created_by
    assert v.created_at.tzinfo is not None and abs(datetime.now(timezone.utc) - v.created_at) < timedelta(minutes=1)


def test_all_reference_forms(reg, adapter_dir):
    v1 = reg.register(adapter_dir(0), task="t")
    reg.register(adapter_dir(1), task="t")
    reg.alias("t:1", "best")
    assert reg.get("t@best").ref == "t:1"
    assert reg.get(v1.digest[:15]).ref == "t:1"  # sha256: + 8 hex digits
    assert reg.get(v1.digest).ref == "t:1"
    reg.alias("t:2", "best")  # aliases move
    assert reg.get("t@best").ref == "t:2"
    reg.unalias("t", "best")
    with pytest.raises(RefError, match="no alias 'best'"):
        reg.get("t@best")


def test_same_content_policy(reg, adapter_dir, snapshot):
    """Same task: refused by default (naming the existing version), or reused, or a new version
    sharing the blobs. Another task: allowed, sharing the blobs."""
    folder = adapter_dir(0)
    reg.register(folder, task="a")
    blobs = snapshot(reg)[1]
    with pytest.raises(DuplicateVersionError, match="already a:1"):
        reg.register(folder, task="a")
    assert reg.register(folder, task="a", on_duplicate="reuse").ref == "a:1"
    assert reg.register(folder, task="a", on_duplicate="new").ref == "a:2"
    assert reg.register(folder, task="b").ref == "b:1"
    assert snapshot(reg)[1] == blobs  # stored once
    with pytest.raises(RefError, match="ambiguous"):  # the digest now names 3 versions
        reg.get(reg.get("a:1").digest)


def test_tags_and_search(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a", tags={"stage": "dev"})
    reg.register(adapter_dir(1), task="a", tags={"stage": "prod", "team": "x"})
    reg.register(adapter_dir(2, base="other-model", fingerprint="sha256:" + "cd" * 32), task="b")
    reg.tag("a:1", "stage", "prod")
    assert [v.ref for v in reg.search(tag={"stage": "prod"})] == ["a:1", "a:2"]
    assert [v.ref for v in reg.search(tag={"stage": "prod", "team": "x"})] == ["a:2"]
    assert [v.ref for v in reg.search(base_model="other-model")] == ["b:1"]
    assert [v.ref for v in reg.search(base_model="sha256:" + "cd" * 32)] == ["b:1"]
    reg.alias("a:2", "production")
    assert [v.ref for v in reg.search(alias="production")] == ["a:2"]
    reg.record_evaluation("a:1", task="a", metric="accuracy", value=0.7, dataset="sha256:abc", scorer="loglik")
    reg.record_evaluation("a:2", task="a", metric="accuracy", value=0.9)
    reg.record_evaluation("b:1", task="other", metric="accuracy", value=0.95)
    assert [v.ref for v in reg.search(metrics=["accuracy>=0.8"])] == ["a:2", "b:1"]
    assert [v.ref for v in reg.search(metrics=["a/accuracy>=0.8"])] == ["a:2"]
    assert [v.ref for v in reg.search(task="a", metrics=["accuracy<0.8"])] == ["a:1"]
    assert reg.search(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    assert len(reg.search(since=datetime.now(timezone.utc) - timedelta(hours=1))) == 3
    assert reg.evaluations("a:1")[0]["scorer"] == "loglik"


def test_sql_looking_search_strings_are_plain_values(reg, adapter_dir, snapshot):
    reg.register(adapter_dir(0), task="a", tags={"stage": "dev"})
    before = snapshot(reg)
    assert reg.search(tag={"stage": "dev' OR '1'='1"}) == []
    assert reg.search(tag={"stage": "x'; DROP TABLE version; --"}) == []
    assert reg.search(base_model="' OR 1=1 --") == []
    with pytest.raises(NameError_):
        reg.search(task="a' OR '1'='1")
    with pytest.raises(ValueError, match="metric filter"):
        reg.search(metrics=["accuracy>=0.5; DROP TABLE version"])
    assert snapshot(reg) == before and len(reg.versions("a")) == 1


def test_lineage_edges_and_walks(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a")
    reg.register(adapter_dir(1), task="b")
    reg.register(adapter_dir(2), task="a", parents=["a:1"])
    reg.register(adapter_dir(3), task="m", parents={"a:2": "merged_from", "b:1": "merged_from"})
    reg.register(adapter_dir(4), task="m", parents=["m:1"])
    up = reg.lineage("m:2")
    assert {(e.parent, e.child, e.kind, e.depth) for e in up} == {
        ("m:1", "m:2", "trained_from", 1), ("a:2", "m:1", "merged_from", 2), ("b:1", "m:1", "merged_from", 2),
        ("a:1", "a:2", "trained_from", 3)}
    down = reg.lineage("a:1", "down")
    assert [(e.child, e.depth) for e in down] == [("a:2", 1), ("m:1", 2), ("m:2", 3)]
    assert len(reg.lineage("m:2", max_depth=1)) == 1


def test_provenance_of_adapter_objects_becomes_lineage(reg, adapter_dir):
    """An op result records its inputs; registering it writes merged_from edges with the parameters."""
    reg.register(adapter_dir(0), task="a")
    reg.register(adapter_dir(1), task="b")

    class FakeAdapter:  # the registry only needs .save() and .provenance (no torch here)
        provenance = {"op": "merge", "method": "ties", "inputs": ["a:1", "b:1", "unsaved"], "density": 0.3}

        def save(self, folder):
            shutil.copytree(adapter_dir(7), folder)

    v = reg.register(FakeAdapter(), task="merged")
    edges = reg.lineage(v.ref)
    assert {(e.parent, e.kind) for e in edges} == {("a:1", "merged_from"), ("b:1", "merged_from"),
                                                   ("unsaved", "merged_from")}
    assert all(e.params["method"] == "ties" and e.params["density"] == 0.3 for e in edges)


def test_export_import_round_trip(reg, adapter_dir, tmp_path):
    src = adapter_dir(0)
    reg.register(src, task="a", metadata={"lr": 0.1}, tags={"k": "v"}, note="n")
    out = reg.export("a:1", tmp_path / "exported")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    other = Registry.open(tmp_path / "other")
    v = other.import_folder(out, task="a-copy")
    assert (v.metadata, v.tags, v.note, v.digest) == ({"lr": 0.1}, {"k": "v"}, "n", reg.get("a:1").digest)
    assert [(e.kind, e.parent.split("@")[0]) for e in other.lineage(v.ref)] == [("imported", "a:1")]
    with pytest.raises(RegistryError, match="not empty"):
        reg.export("a:1", out)


def test_path_is_a_verified_checkout(reg, adapter_dir):
    src = adapter_dir(0)
    reg.register(src, task="a")
    p = reg.path("a:1")
    assert (p / "adapter_config.json").read_bytes() == (src / "adapter_config.json").read_bytes()
    (p / "adapter_config.json").write_text("{}")  # a user edits the checkout...
    p2 = reg.path("a:1")  # ... and gets a clean copy back
    assert (p2 / "adapter_config.json").read_bytes() == (src / "adapter_config.json").read_bytes()


def test_deleted_versions(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a")
    reg.register(adapter_dir(1), task="a")
    reg.alias("a:1", "best")
    reg.delete("a:1")
    assert reg.get("a:1", include_deleted=True).deleted
    for action in (lambda: reg.get("a:1"), lambda: reg.alias("a:1", "x"), lambda: reg.path("a:1"),
                   lambda: reg.delete("a:1")):
        with pytest.raises(RefError, match="a:1 was deleted"):
            action()
    with pytest.raises(RefError, match="no alias 'best'"):  # the alias went with it
        reg.get("a@best")


# ---- bad input: a clear error and nothing written ---------------------------------------------------


def _corrupt(folder, how):
    weights, config = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-50])
    elif how == "pickle":
        weights.rename(folder / "adapter_model.bin")
    elif how == "no-config":
        config.unlink()
    elif how == "bad-json":
        config.write_text("{oops")
    elif how == "rank-mismatch":
        config.write_text(json.dumps({**json.loads(config.read_text()), "r": 5}))
    elif how == "nan":
        import numpy as np
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(weights))
        key = sorted(tensors)[0]
        tensors[key][0, 0] = np.nan
        save_file(tensors, str(weights))
    elif how == "subfolder":
        (folder / "nested").mkdir()
    return folder


@pytest.mark.parametrize("how, error, message", [
    ("truncated", AdapterFormatError, "truncated"),
    ("pickle", AdapterFormatError, "pickle weights are refused"),
    ("no-config", AdapterFormatError, "not a LoRA adapter folder"),
    ("bad-json", AdapterFormatError, "not valid JSON"),
    ("rank-mismatch", AdapterFormatError, "rank 2 in the weights but 5 in the config"),
    ("nan", NonFiniteError, "NaN or inf"),
    ("subfolder", AdapterFormatError, "sub-folder"),
])
def test_bad_folders_leave_nothing(reg, adapter_dir, how, error, message, snapshot):
    reg.register(adapter_dir(0), task="a")
    before = snapshot(reg)
    with pytest.raises(error, match=message):
        reg.register(_corrupt(adapter_dir(1), how), task="a")
    assert snapshot(reg) == before


def test_not_a_folder(reg, tmp_path, snapshot):
    (tmp_path / "file.txt").write_text("x")
    before = snapshot(reg)
    for path in (tmp_path / "missing", tmp_path / "file.txt", tmp_path):
        with pytest.raises(AdapterFormatError):
            reg.register(path, task="a")
    assert snapshot(reg) == before


@pytest.mark.parametrize("task", ["a/b", "..", "a..b", "with space", "tâche", "x" * 10_000, "", "../../etc"])
def test_bad_task_names_leave_nothing(reg, adapter_dir, task, snapshot):
    before = snapshot(reg)
    with pytest.raises(NameError_):
        reg.register(adapter_dir(0), task=task)
    assert snapshot(reg) == before


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(parents=["nope:1"]), RefError, "no task named 'nope'"),
    (dict(parents=["a:9"]), RefError, "has no version 9"),
    (dict(parents=["bad ref"]), RefError, "malformed reference"),
    (dict(metadata={"x": float("nan")}), ValueError, "without NaN"),
    (dict(metadata={"x": object()}), ValueError, "JSON-serialisable"),
    (dict(tags={"bad key": "v"}), NameError_, "tag key"),
    (dict(on_duplicate="sometimes"), ValueError, "on_duplicate"),
])
def test_bad_arguments_leave_nothing(reg, adapter_dir, kwargs, error, message, snapshot):
    reg.register(adapter_dir(0), task="a")
    before = snapshot(reg)
    with pytest.raises(error, match=message):
        reg.register(adapter_dir(1), task="a", **kwargs)
    assert snapshot(reg) == before


@pytest.mark.parametrize("ref, message", [
    ("nope", "no task named 'nope'"), ("a:7", "has no version 7"), ("a@gone", "no alias 'gone'"),
    ("sha256:00000000", "no live version has a digest"), ("a:b:c", "malformed"), ("", "malformed"),
])
def test_unknown_or_malformed_refs(reg, adapter_dir, ref, message, snapshot):
    reg.register(adapter_dir(0), task="a")
    before = snapshot(reg)
    for action in (reg.get, reg.load, reg.path, reg.delete, lambda r: reg.alias(r, "x"), lambda r: reg.tag(r, "k", "v")):
        with pytest.raises(RefError, match=message):
            action(ref)
    assert snapshot(reg) == before


def test_bad_evaluations_and_aliases(reg, adapter_dir, snapshot):
    reg.register(adapter_dir(0), task="a")
    before = snapshot(reg)
    with pytest.raises(ValueError, match="finite"):
        reg.record_evaluation("a:1", task="a", metric="accuracy", value=float("inf"))
    with pytest.raises(NameError_):
        reg.alias("a:1", "has space")
    with pytest.raises(RefError, match="no benchmark run"):
        reg.record_evaluation("a:1", task="a", metric="accuracy", value=0.5, run="nope")
    assert snapshot(reg) == before


def test_refuses_to_adopt_a_folder_that_is_not_a_registry(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "api.py").write_text("# someone's package folder\n")
    with pytest.raises(RegistryError, match="not an adapter-hub registry"):
        Registry.open(tmp_path / "code")
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == ["api.py"]


def test_open_without_create(tmp_path):
    with pytest.raises(RegistryError, match="no registry at"):
        Registry.open(tmp_path / "none", create=False)
