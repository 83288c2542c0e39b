"""The SVG pictures on their own: cells and values, escaping, bands only with intervals, graph layout."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from adapter_hub.ui import plots

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_heatmap_has_one_cell_per_entry_with_its_value_and_escapes_names():
    svg = plots.heatmap([[0.5, None], [0.25, 1.0]], ["<b>a</b>", "b&c"], "t <i>")
    root = parse(svg)
    cells = root.findall(f".//{SVG}rect[@class='cell']")
    assert [(c.get("data-row"), c.get("data-col")) for c in cells] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"0.500", "—", "0.250", "1.000"} <= set(texts)
    assert "<b>a</b>" in texts and "after b&c" in texts and "<b>" not in svg  # escaped in the source
    fills = {c.get("fill") for c in cells}
    assert "#eee" in fills and len(fills) == 4  # missing cell grey; each value its own colour


def test_curves_draw_bands_only_where_there_is_an_interval():
    one = [{"mean": 0.5, "low": 0.5, "high": 0.5, "seeds": 1}, {"mean": 0.6, "low": 0.6, "high": 0.6, "seeds": 1}]
    two = [{"mean": 0.5, "low": 0.4, "high": 0.6, "seeds": 2}, {"mean": 0.6, "low": 0.5, "high": 0.7, "seeds": 2}]
    plain = parse(plots.curves([("seq", one)], ["x", "y"], "t"))
    banded = parse(plots.curves([("seq", two), ("mtl <x>", two)], ["x", "y"], "t"))
    assert plain.findall(f".//{SVG}path[@class='band']") == []
    assert len(banded.findall(f".//{SVG}path[@class='band']")) == 2
    assert len(banded.findall(f".//{SVG}path[@class='line']")) == 2
    labels = [t.text for t in banded.iter(f"{SVG}text")]
    assert "mtl <x>" in labels and "after learning task #" in labels and "accuracy on tasks seen so far" in labels


def test_lineage_puts_every_parent_above_its_children_and_links_only_registry_refs():
    up = [{"parent": "a:1", "child": "m:1", "kind": "merged_from", "params": {}, "depth": 1},
          {"parent": "b:1", "child": "m:1", "kind": "merged_from", "params": {}, "depth": 1},
          {"parent": "a:1", "child": "b:1", "kind": "trained_from", "params": {}, "depth": 2},
          {"parent": "/some/<folder>", "child": "a:1", "kind": "trained_from", "params": {"x": "<y>"}, "depth": 2}]
    down = [{"parent": "m:1", "child": "m:2", "kind": "reduced_from", "params": {"rank": 2}, "depth": 1}]
    svg = plots.lineage("m:1", up, down, href=lambda ref: None if ref.startswith("/") else f"/versions/{ref}")
    root = parse(svg)
    y = {}
    for node in root.iter(f"{SVG}g"):
        if node.get("class") == "node":
            y[node.get("data-ref")] = float(node.find(f".//{SVG}rect").get("y"))
    assert y["/some/<folder>"] < y["a:1"] < y["b:1"] < y["m:1"] < y["m:2"]
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == 5
    assert all(y[e.get("data-parent")] < y[e.get("data-child")] for e in edges)
    links = re.findall(r'<a href="([^"]+)"', svg)
    assert sorted(links) == ["/versions/a:1", "/versions/b:1", "/versions/m:2"]  # not the centre, not the folder
    assert "<folder>" not in svg and "<y>" not in svg
