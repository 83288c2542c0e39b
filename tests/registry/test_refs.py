"""The reference grammar and the naming rules."""

from __future__ import annotations

import pytest

from registry.errors import NameError_, RefError
from registry.refs import check_name, parse_ref


@pytest.mark.parametrize("text, task, number, alias, digest", [
    ("agnews", "agnews", None, None, None),
    ("agnews:3", "agnews", 3, None, None),
    ("agnews@best", "agnews", None, "best", None),
    ("my.task-2_b:10", "my.task-2_b", 10, None, None),
    ("sha256:0123abcd", None, None, None, "sha256:0123abcd"),
])
def test_valid_refs(text, task, number, alias, digest):
    ref = parse_ref(text)
    assert (ref.task, ref.number, ref.alias, ref.digest_prefix) == (task, number, alias, digest)


@pytest.mark.parametrize("text, message", [
    ("", "malformed reference"),
    ("agnews:", "malformed reference"),
    ("agnews:0", "version numbers start at 1"),
    ("agnews:-1", "malformed reference"),
    ("agnews:1:2", "malformed reference"),
    ("agnews@", "malformed reference"),
    ("agnews@a@b", "malformed reference"),
    ("agnews:1@best", "malformed reference"),
    ("sha256:abc", "8-64 lowercase hex"),
    ("sha256:ABCDEF12", "8-64 lowercase hex"),
    ("sha256:zzzzzzzz", "8-64 lowercase hex"),
    ("a/b:1", "malformed reference"),
    ("../etc:1", "malformed reference"),
    ("a..b", "malformed reference"),
    ("x' OR '1'='1", "malformed reference"),
    ("tâche", "malformed reference"),
    ("a" * 200, "malformed reference"),
])
def test_malformed_refs(text, message):
    with pytest.raises(RefError, match=message):
        parse_ref(text)


@pytest.mark.parametrize("name, why", [
    ("a/b", r"contains \['/'\]"),
    ("..", "'..'"),
    ("a..b", "'..'"),
    ("with space", r"contains \[' '\]"),
    ("tâche", r"contains \['â'\]"),
    ("日本", "contains"),
    ("x" * 10_000, "10000 characters long"),
    ("", "empty"),
    ("-lead", "must start with a letter or digit"),
    ("drop;table", r"contains \[';'\]"),
])
def test_bad_names_say_why(name, why):
    with pytest.raises(NameError_, match=why):
        check_name(name)


def test_good_names():
    for name in ["agnews", "A1", "task.v2", "x" * 128, "a-b_c.d"]:
        assert check_name(name) == name
    with pytest.raises(NameError_):
        check_name("x" * 129)
