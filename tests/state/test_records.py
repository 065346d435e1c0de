"""Markers and shape records (tasks/state/records.py): typed reads, and why a target is stale."""

import json

from conftest import cache, make_entry
from tasks.state import records
from tasks.state.schema import SCHEMA, Entry, Marker


def marker(**changes) -> Marker:
    fields = dict(schema=SCHEMA, target="v3@tp8-1", model="v3", hf_id="x/v3", tp=8, launch_index=0, launch_args=[],
                  launch_hash="L", plan_hash="P", m_list="default", fingerprint={"nvcc": "13.0.88"},
                  cache_root="/c", entries={"kernel.a.1": Entry("kernel.cubin", 6)}, verified="-", warmed_at="t")
    return Marker(**{**fields, **changes})


def test_a_record_is_missing_unreadable_of_another_schema_or_invalid(tmp_path):
    path = records.marker_path(tmp_path, "v3@tp8-1")
    assert records.read_marker(tmp_path, "v3@tp8-1") == (None, "missing")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert records.read_marker(tmp_path, "v3@tp8-1")[1].startswith("unreadable (DecodeError")
    path.write_text(json.dumps({"schema": 99}))
    assert records.read_marker(tmp_path, "v3@tp8-1")[1] == "unreadable (schema 99, expected 1)"
    path.write_text(json.dumps({"schema": SCHEMA, "target": 3}))
    assert records.read_marker(tmp_path, "v3@tp8-1")[1].startswith("invalid (")


def test_written_markers_read_back_as_written(tmp_path):
    records.write_json(records.marker_path(tmp_path, "v3@tp8-1"), marker())
    assert records.read_marker(tmp_path, "v3@tp8-1") == (marker(), None)
    on_disk = json.loads(records.marker_path(tmp_path, "v3@tp8-1").read_text())
    assert on_disk["entries"] == {"kernel.a.1": {"binary": "kernel.cubin", "size": 6}}  # the JSON users read


def test_target_reasons_cheapest_first(tmp_path):
    make_entry(tmp_path, "kernel.a.1", binary=b"CUBIN!")
    c, fp = cache(tmp_path), {"nvcc": "13.0.88"}
    records.write_json(records.marker_path(tmp_path, "v3@tp8-1"), marker())
    assert records.target_reasons(c, "v3@tp8-1", "L", "P", fp) == []
    assert records.target_reasons(c, "v3@tp8-1", "other", "P", fp) == ["launch args changed"]
    assert records.target_reasons(c, "v3@tp8-1", "L", "other", fp) == ["shape plan changed"]
    assert records.target_reasons(c, "v3@tp8-1", "L", None, fp) == []  # a fallback target's plan is unknown
    assert records.target_reasons(c, "v3@tp8-1", "L", "P", {"nvcc": "13.1.0"}) == ["nvcc 13.0.88 -> 13.1.0"]
    (tmp_path / "cache" / "kernel.a.1" / "kernel.cubin").write_bytes(b"CUBIN")
    assert records.target_reasons(c, "v3@tp8-1", "L", "P", fp) == [
        "entry kernel.a.1 changed (kernel.cubin 6 bytes -> kernel.cubin 5 bytes)"]


def test_a_missing_marker_of_a_launch_tuple_warmed_with_other_args_says_so(tmp_path):
    records.write_json(records.marker_path(tmp_path, "v3@tp8-old"), marker(target="v3@tp8-old"))
    assert records.target_reasons(cache(tmp_path), "v3@tp8-new", "L2", "P", {}, "v3", 0) == [
        "launch args changed (launch[0] was warmed with other args)"]
    assert records.target_reasons(cache(tmp_path), "v3@tp8-new", "L2", "P", {}, "v3", 1) == [
        "not warmed yet (no marker)"]
