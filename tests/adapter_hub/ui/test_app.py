"""The web view without a browser: every page and every API endpoint, the API against the CLI's --json,
404s and 400s with the registry's own messages, read-only, and escaping of hostile strings."""

from __future__ import annotations

import html
import json

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def client(ui_registry):
    from adapter_hub.ui import create_app
    from registry import Registry

    reg = Registry.open(ui_registry, create=False)
    with TestClient(create_app(reg)) as c:
        yield c
    reg.close()


def cli_json(location, *args):
    from adapter_hub.cli import cli

    result = CliRunner().invoke(cli, ["--registry", str(location), *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("url, cli_args", [
    ("/api/tasks", ["list"]),
    ("/api/tasks/topic/versions", ["versions", "topic"]),
    ("/api/versions/merged:1", ["show", "merged:1"]),
    ("/api/versions/merged@best", ["show", "merged@best"]),
    ("/api/versions/merged:2/lineage?direction=both", ["lineage", "merged:2", "--both"]),
    ("/api/versions/topic:1/lineage?direction=down&depth=1", ["lineage", "topic:1", "--down", "--depth", "1"]),
    ("/api/search?task=merged", ["search", "--task", "merged"]),
    ("/api/search?tag=note%3D<script>alert(1)</script>", ["search", "--tag", "note=<script>alert(1)</script>"]),
    ("/api/search?metric=topic/accuracy>=0", ["search", "--metric", "topic/accuracy>=0"]),
    ("/api/runs", ["bench", "list"]),
    ("/api/runs/ui-run", ["bench", "show", "ui-run"]),
    ("/api/compare?run=ui-run", ["bench", "compare", "ui-run"]),
])
def test_every_endpoint_answers_what_the_cli_prints_with_json(client, ui_registry, url, cli_args):
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.json() == cli_json(ui_registry, *cli_args)
    assert response.json()  # each of these has content in the fixture registry


def test_the_api_answers_what_the_fixture_registry_holds(client, hostile):
    """Expectations written by hand from how tests/adapter_hub/ui/conftest.py fills the registry, not
    from registry/views.py (which the API and the CLI's --json share, so comparing those two alone
    could not catch a wrong view)."""
    tasks = {row["task"]: row for row in client.get("/api/tasks").json()}
    assert set(tasks) >= {"topic", "sentiment", "merged"}
    assert (tasks["merged"]["versions"], tasks["merged"]["latest"], tasks["merged"]["aliases"]) == (2, "merged:2", ["best->1"])
    assert set(tasks["merged"]) == {"task", "versions", "latest", "updated_at", "aliases"}

    merged = client.get("/api/versions/merged@best").json()
    assert (merged["ref"], merged["task"], merged["number"], merged["deleted_at"]) == ("merged:1", "merged", 1, None)
    assert merged["tags"] == {"note": hostile} and merged["aliases"] == ["best"]
    assert merged["base_model"] == "tiny-llama" and merged["rank"] == 8  # TIES of two rank-4 parts: rank 4 + 4
    assert merged["digest"].startswith("sha256:") and len(merged["digest"]) == 71
    assert sorted(f["path"] for f in merged["files"]) == ["adapter_config.json", "adapter_model.safetensors"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in merged["files"])
    assert sorted((e["parent"], e["child"], e["kind"], e["depth"]) for e in merged["parents"]) == [
        ("sentiment:1", "merged:1", "merged_from", 1), ("topic:1", "merged:1", "merged_from", 1)]
    assert {(e["params"]["method"], e["params"]["density"]) for e in merged["parents"]} == {("ties", 0.5)}

    reduced = client.get("/api/versions/merged:2").json()
    assert reduced["note"] == f"small {hostile}" and reduced["rank"] == 2 and reduced["tags"] == {}
    both = client.get("/api/versions/merged:2/lineage?direction=both").json()
    assert sorted((e["parent"], e["child"], e["kind"], e["depth"]) for e in both) == [  # seq s0 registered first:
        ("merged:1", "merged:2", "reduced_from", 1), ("sentiment:1", "merged:1", "merged_from", 2),  # its 2nd state
        ("topic:1", "merged:1", "merged_from", 2), ("topic:1", "sentiment:1", "trained_from", 3)]  # from its 1st

    runs = client.get("/api/runs").json()
    assert [(r["name"], r["status"], r["tasks"], r["strategies"]) for r in runs] == [
        ("ui-run", "done", ["topic", "sentiment"], ["seq", "per_task"])]
    run = client.get("/api/runs/ui-run").json()
    assert run["config"]["seeds"] == [0, 1] and run["config"]["max_test"] == 16
    assert sorted(run["results"]["strategies"]["seq"]["cells"]) == ["seq/s0", "seq/s1"]
    assert {c["cell"]: (c["state"], c["node"], c["error"]) for c in run["cell_states"]} == {
        "seq/s0": ("pending", None, None), "seq/s1": ("failed", "node-b", f"ValueError: bad row {hostile}")}
    compared = client.get("/api/compare?run=ui-run").json()
    assert [(c["run"], c["strategy"], c["cells"], c["against"]) for c in compared] == [
        ("ui-run", "seq", 2, "seq"), ("ui-run", "per_task", 2, "seq")]
    assert compared[0]["difference"] is None and compared[1]["difference"]["acc"]["cells"] == 2


def test_curves_endpoint_gives_the_seen_task_accuracy_with_intervals(client):
    data = client.get("/api/runs/ui-run/curves").json()
    run = client.get("/api/runs/ui-run").json()
    assert data["tasks"] == ["topic", "sentiment"]
    for label, points in data["strategies"].items():
        R = run["results"]["strategies"][label]["matrix"]  # the mean matrix over the two seeds
        assert [p["mean"] for p in points] == pytest.approx([R[0][0], (R[1][0] + R[1][1]) / 2])
        assert all(p["low"] <= p["mean"] <= p["high"] and p["seeds"] == 2 for p in points)


@pytest.mark.parametrize("url, status, says", [
    ("/api/tasks/nope/versions", 404, "no task named 'nope'"),
    ("/api/versions/topic:99", 404, "has no version 99"),
    ("/api/versions/merged@nope", 404, "has no alias 'nope'"),
    ("/api/versions/nope:1/lineage", 404, "no task named 'nope'"),
    ("/api/runs/nope", 404, "no benchmark run 'nope'"),
    ("/api/runs/nope/curves", 404, "no benchmark run 'nope'"),
    ("/api/compare?run=nope", 404, "no benchmark run 'nope'"),
    ("/api/compare", 400, "name the runs to compare"),
    ("/api/search?metric=accuracy", 400, "must look like 'accuracy>=0.8'"),
    ("/api/search?tag=novalue", 400, "must look like KEY=VALUE"),
    ("/api/versions/topic:1/lineage?direction=sideways", 400, "direction must be one of"),
    ("/api/versions/topic:1/lineage?depth=0", 400, "depth must be a whole number"),
    ("/api/versions/..%2F..%2Fetc%2Fpasswd", 404, ""),
    ("/api/nothing-here", 404, ""),
])
def test_unknown_refs_and_bad_filters_say_what_is_wrong(client, url, status, says):
    response = client.get(url)
    assert response.status_code == status
    assert says in response.json()["error"]


def test_pages_show_unknown_refs_as_404_pages(client):
    response = client.get("/versions/topic:99")
    assert response.status_code == 404 and "has no version 99" in response.text and "<h1>404</h1>" in response.text


def test_pages_show_the_registry(client):
    tasks = client.get("/").text
    for task in ("topic", "sentiment", "merged"):
        assert f'href="/tasks/{task}"' in tasks
    versions = client.get("/tasks/topic").text
    for ref in ("topic:1", "topic:2"):
        assert f'href="/versions/{ref}"' in versions
    version = client.get("/versions/merged:1").text
    edges = {(e["parent"], e["child"], e["kind"]) for way in ("up", "down")
             for e in client.get(f"/api/versions/merged:1/lineage?direction={way}").json()}
    assert {("topic:1", "merged:1", "merged_from"), ("sentiment:1", "merged:1", "merged_from"),
            ("merged:1", "merged:2", "reduced_from")} <= edges  # and seq's topic:1 -> sentiment:1 further up
    assert version.count('<g class="edge"') == len(edges)
    for parent, child, kind in edges:
        assert f'data-parent="{parent}" data-child="{child}" data-kind="{kind}"' in version
    assert 'data-kind="merged_from"' in version and 'data-kind="reduced_from"' in version
    assert 'href="/versions/topic:1"' in version and "adapter_config.json" in version
    assert '"peft_type": "LORA"' in html.unescape(version) and '"r": 8' in html.unescape(version)  # ties concatenates two rank-4 adapters
    run = client.get("/runs/ui-run").text
    assert run.count('<svg xmlns="http://www.w3.org/2000/svg" class="heatmap"') == 2
    assert run.count('class="cell"') == 2 * 2 * 2  # two strategies, 2 x 2 matrices
    assert run.count('class="band"') == 2  # two seeds: each curve has its interval
    assert 'id="routing"' in run and "prototype" in run
    assert "no difference" in run or "significant" in run
    compare = client.get("/compare?run=ui-run").text
    assert 'id="comparison"' in compare and 'class="curves"' in compare
    assert 'href="/runs/ui-run"' in client.get("/runs").text


def test_hostile_strings_render_as_text(client, hostile):
    for url in ("/versions/merged:1", "/versions/merged:2", "/tasks/merged", f"/search?tag=note%3D{hostile}"):
        page = client.get(url).text
        assert hostile not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_run_page_lists_the_cells_workers_claimed_with_their_errors_escaped(client, hostile):
    run = client.get("/runs/ui-run").text
    assert 'id="cells"' in run and "node-b" in run and "worker-host:4242" in run and "failed" in run
    assert hostile not in run and "bad row &lt;script&gt;" in run
    states = {c["cell"]: c for c in client.get("/api/runs/ui-run").json()["cell_states"]}
    assert states["seq/s1"]["state"] == "failed" and states["seq/s0"]["state"] == "pending"


def test_search_page_finds_by_tag_and_metric(client, hostile):
    by_tag = client.get("/search", params={"tag": f"note={hostile}"}).text
    assert 'href="/versions/merged:1"' in by_tag and 'href="/versions/topic:1"' not in by_tag
    by_metric = client.get("/search", params={"metric": "topic/accuracy>=0"}).text
    assert 'href="/versions/topic:1"' in by_metric
    assert client.get("/search", params={"metric": "nonsense"}).status_code == 400


ROUTES = ["/", "/tasks/topic", "/versions/merged:1", "/runs", "/runs/ui-run", "/compare?run=ui-run",
          "/search?task=topic", "/api/tasks", "/api/versions/merged:1", "/api/runs/ui-run"]


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_no_route_accepts_a_write(client, method):
    for url in ROUTES:
        assert getattr(client, method)(url).status_code == 405, (method, url)


def test_browsing_everything_leaves_the_registry_byte_identical(client, ui_registry, folder_digest):
    before = folder_digest(ui_registry)
    for url in ROUTES + ["/api/runs/ui-run/curves", "/versions/merged:2", "/versions/topic:99"]:
        client.get(url)
    assert folder_digest(ui_registry) == before


def test_ui_command_binds_to_this_machine_by_default(ui_registry, monkeypatch):
    import uvicorn

    from adapter_hub.cli import cli

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = CliRunner().invoke(cli, ["--registry", str(ui_registry), "ui"])
    assert result.exit_code == 0, result.output
    assert calls == [{"host": "127.0.0.1", "port": 8080, "log_level": "warning"}]
    assert "read-only at http://127.0.0.1:8080 for this machine only" in result.stderr


def test_ui_command_refuses_a_folder_without_a_registry(tmp_path):
    from adapter_hub.cli import cli

    result = CliRunner().invoke(cli, ["--registry", str(tmp_path / "none"), "ui"])
    assert result.exit_code == 1 and "error:" in result.stderr
    assert not (tmp_path / "none").exists()


def test_bench_show_lists_cells_that_are_not_done(ui_registry):
    from adapter_hub.cli import cli

    result = CliRunner().invoke(cli, ["--registry", str(ui_registry), "bench", "show", "ui-run"])
    assert result.exit_code == 0, result.output
    assert "cells (distributed run)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "seq/s1" in line)
    assert "failed" in row and "node-b" in row and "ValueError: bad row" in row
