"""Atomic writes: an exception in the middle of a write leaves no partial file and the old file intact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellfusion_core import io


class Boom(Exception):
    pass


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def test_exception_inside_atomic_path_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.bin"
    io.write_bytes(b"old contents", target)
    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"new, but only half")
            raise Boom()
    assert target.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


def test_failing_parquet_write_keeps_the_old_table(tmp_path):
    target = tmp_path / "single_cell.parquet"
    old = pd.DataFrame({"a": np.arange(5.0)})
    io.write_parquet(old, target)
    # pyarrow starts the file, then fails on the column it cannot convert
    bad = pd.DataFrame({"a": np.arange(1000.0), "b": [object()] * 1000})
    with pytest.raises(Exception):
        io.write_parquet(bad, target)
    pd.testing.assert_frame_equal(pd.read_parquet(target), old)
    assert leftovers(tmp_path) == []


def test_failing_parquet_write_leaves_no_new_file(tmp_path):
    target = tmp_path / "never.parquet"
    with pytest.raises(Exception):
        io.write_parquet(pd.DataFrame({"b": [object()]}), target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failing_json_and_manifest_writes_keep_the_old_file(tmp_path):
    target = tmp_path / "record.json"
    io.write_json({"rows": 1}, target)
    with pytest.raises(TypeError):
        io.write_json({"rows": 2, "oops": object()}, target)
    assert json.loads(target.read_text()) == {"rows": 1}

    io.write_manifest(tmp_path, command="test", parameters={"k": 1})
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(TypeError):
        io.write_manifest(tmp_path, command="test", parameters={"k": object()})
    assert (tmp_path / "manifest.json").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_interrupt_during_write_is_handled_like_an_error(tmp_path, monkeypatch):
    """KeyboardInterrupt (Ctrl-C) in the middle of the rename step: still nothing partial."""
    target = tmp_path / "t.parquet"
    io.write_parquet(pd.DataFrame({"a": [1]}), target)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.write_parquet(pd.DataFrame({"a": [2, 3]}), target)
    monkeypatch.undo()
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert leftovers(tmp_path) == []


def test_site_that_fails_while_writing_leaves_no_partition(small_plate, tmp_path, monkeypatch):
    """A failure while a site's partition is written: no partition, no record, the site is 'failed'."""
    from profiler.config import load_pipeline
    from profiler.extract import pipeline_hash, run_site
    from profiler.plate import discover

    config = load_pipeline("example")
    site = discover(small_plate, config).complete_sites[0]
    import pyarrow.parquet as pq

    real = pq.write_table  # what DataFrame.to_parquet and cellfusion_core.io.write_parquet write with

    def half_then_fail(table, where, *a, **k):
        real(table.slice(0, table.num_rows // 2), where, *a, **k)  # something is on disk …
        raise OSError("disk full")  # … and then the disk fills up

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    entry = run_site(site, config, tmp_path / "sites", pipeline_hash(config))
    assert entry["status"] == "failed" and "disk full" in entry["record"]["Metadata_Reason"]
    assert list((tmp_path / "sites").iterdir()) == []


def test_extract_outputs_are_complete_files(small_plate, tmp_path):
    from conftest import example_pipeline
    from profiler.extract import extract

    out = extract(small_plate, tmp_path / "out", pipeline=example_pipeline(), workers=0, progress=False)
    assert not list(out.rglob("*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    for name, facts in manifest["outputs"].items():
        if name.endswith(".parquet"):
            assert len(pd.read_parquet(out / name)) == facts["rows"]
        else:
            assert (out / name).stat().st_size > 0
            if name.endswith(".json"):
                json.loads((out / name).read_text())
    for rec in (out / "sites").glob("*.json"):
        entry = json.loads(rec.read_text())
        if entry["partition"]:
            part = out / "sites" / entry["partition"]["file"]
            assert io.file_sha256(part) == entry["partition"]["sha256"]
            assert len(pd.read_parquet(part)) == entry["partition"]["rows"]
