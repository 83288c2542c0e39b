"""Where a cell ran: the CPU's name and, where the name is masked, its family/model/stepping."""

from __future__ import annotations

import torch

from adapter_hub.bench import provenance

# Two processors as Linux writes them; the second differs so that reading past the first shows.
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
cache size\t: 512 KB
flags\t\t: fpu avx2

processor\t: 1
cpu family\t: 26
model\t\t: 17
model name\t: Other CPU
stepping\t: 0
"""


def test_the_cpu_is_named_and_identified_from_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert provenance.cpu_name(info) == "AMD EPYC"
    assert provenance.cpu_id(info) == "family 25 model 1 stepping 1, cache 512 KB"


def test_a_cpuinfo_without_family_gives_no_id(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert provenance.cpu_id(info) is None
    assert provenance.cpu_name(info) == "Some ARM core"
    assert provenance.cpu_id(tmp_path / "absent") is None


def test_a_cell_records_the_cpu_id_when_there_is_one(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    monkeypatch.setattr(provenance, "CPUINFO", info)
    where = provenance.machine(torch.device("cpu"))
    assert where["cpu"] == "AMD EPYC" and where["cpu_id"] == "family 25 model 1 stepping 1, cache 512 KB"
    info.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert "cpu_id" not in provenance.machine(torch.device("cpu"))
