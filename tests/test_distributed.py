"""Sites as Dask tasks: a 2-worker LocalCluster on loopback gives the same rows as a serial run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import assert_same_outputs
from profiler.distributed import dask_client, default_workers
from cellfusion_core.errors import ConfigError, InputError
from profiler.extract import extract



@pytest.fixture(scope="module")
def serial_run(small_plate, tmp_path_factory) -> Path:
    return extract(small_plate, tmp_path_factory.mktemp("serial"), workers=0, progress=False)


def test_two_worker_local_cluster_gives_the_serial_rows(small_plate, serial_run, tmp_path):
    out = extract(small_plate, tmp_path / "dask", workers=2, progress=False)
    assert_same_outputs(serial_run, out)
    sc = pd.read_parquet(out / "single_cell.parquet")
    assert len(sc) > 0
    # deterministic order: plate, well, site, then object number
    keys = sc[["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]]
    assert keys.equals(keys.sort_values(list(keys.columns)).reset_index(drop=True))
    # one partition and one record per site
    sites = sorted(p.name for p in (out / "sites").iterdir())
    n_sites = len(pd.read_parquet(out / "image.parquet"))
    assert len([s for s in sites if s.endswith(".json")]) == n_sites
    assert not [s for s in sites if s.endswith(".tmp")]
    # the control wells' sites ran first and a worker fitted the outlier model while the others ran;
    # the model is the one the serial run fits after its last site, bit for bit
    import json

    fitted = json.loads((out / "manifest.json").read_text())["outliers"]
    assert fitted.get("fitted", "").startswith("on a Dask worker"), fitted
    assert json.loads((out / "outliers.json").read_text()) == json.loads((serial_run / "outliers.json").read_text())


def test_existing_scheduler_address_is_used(small_plate, serial_run, tmp_path):
    from distributed import LocalCluster

    # a cluster started elsewhere (here: threads in this process, reached over loopback TCP)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, host="127.0.0.1",
                      protocol="tcp://", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        out = extract(small_plate, tmp_path / "remote", scheduler=cluster.scheduler_address, progress=False)
    assert_same_outputs(serial_run, out)


def test_bad_scheduler_addresses_are_config_errors():
    with pytest.raises(ConfigError, match="no protocol"):
        with dask_client(scheduler="localhost:8786"):
            pass
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        with dask_client(scheduler="tcp://127.0.0.1:9", timeout=1):
            pass
    with pytest.raises(ConfigError, match="at least 1"):
        with dask_client(workers=-1):
            pass


def test_default_workers_is_bounded_by_tasks_and_cores():
    from dask.system import CPU_COUNT

    assert default_workers(1) == 1
    assert 1 <= default_workers() <= CPU_COUNT
    assert default_workers(10_000) == default_workers()


def test_broken_sites_do_not_kill_the_run(small_plate, serial_run, tmp_path, monkeypatch, caplog):
    import profiler.partitions as ex  # run_site, the task each site runs, calls process_site there

    real = ex.process_site
    plate_sites = pd.read_parquet(serial_run / "image.parquet")
    bug_well, user_well = plate_sites["Metadata_Well"].iloc[1], plate_sites["Metadata_Well"].iloc[2]

    def flaky(site, config, **kw):
        if site.well == bug_well:
            raise ZeroDivisionError("a bug")
        if site.well == user_well:
            raise InputError("the image is upside down", path=site.files["DNA"], hint="turn it")
        return real(site, config, **kw)

    monkeypatch.setattr(ex, "process_site", flaky)
    out = extract(small_plate, tmp_path / "broken", workers=0, progress=False)
    image = pd.read_parquet(out / "image.parquet").set_index("Metadata_Well")
    assert image.loc[bug_well, "Metadata_Status"] == "failed"
    assert "ZeroDivisionError: a bug" in image.loc[bug_well, "Metadata_Reason"]
    assert image.loc[user_well, "Metadata_Status"] == "error"
    assert "upside down" in image.loc[user_well, "Metadata_Reason"]
    assert "hint: turn it" in image.loc[user_well, "Metadata_Reason"]
    assert (image.drop(index=[bug_well, user_well])["Metadata_Status"] == "ok").all()
    # the bug is logged with the site named and its traceback
    assert any(bug_well in r.getMessage() and "Traceback" in r.getMessage() for r in caplog.records)
    # the other sites' cells are all there, identical to the serial run
    sc = pd.read_parquet(out / "single_cell.parquet")
    ref = pd.read_parquet(serial_run / "single_cell.parquet")
    ref = ref[~ref["Metadata_Well"].isin([bug_well, user_well])].reset_index(drop=True)
    pd.testing.assert_frame_equal(sc, ref)
    # a failed site has no partition and no record (a rerun retries it); an error site has a record only
    names = {p.name for p in (out / "sites").iterdir()}
    assert not [n for n in names if bug_well in n]
    assert [n for n in names if user_well in n] == [n for n in names if user_well in n and n.endswith(".json")]

    # the rerun (bug fixed) retries both and then equals the serial run
    monkeypatch.setattr(ex, "process_site", real)
    extract(small_plate, out, workers=0, progress=False)
    assert_same_outputs(serial_run, out)


def test_invalid_pipeline_parameter_stops_the_run(small_plate, tmp_path):
    """A ConfigError is the pipeline's fault, not a site's: the run stops instead of failing every site."""
    from profiler.config import load_pipeline

    cfg = load_pipeline("example").to_dict()
    cfg.setdefault("segmentation", {}).setdefault("cells", {})["no_such_option"] = 1
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no_such_option"):
        extract(small_plate, out, pipeline=cfg, workers=0, progress=False)
    assert not (out / "single_cell.parquet").exists() and not (out / "image.parquet").exists()


def test_local_cluster_runs_without_dashboard_only_services():
    # the LocalCluster of `profiler extract` turns off what only a dashboard needs (each worker's
    # statistical profiler, the 20 ms tick that watches for blocked event loops) and the memory
    # manager that would drop broadcast replicas; the nannies hand that configuration to the workers
    import dask

    from profiler.distributed import LOCAL_CLUSTER_CONFIG

    with dask_client(workers=1) as client:
        got = client.run(lambda: {k: dask.config.get(k) for k in LOCAL_CLUSTER_CONFIG})
        sched = client.run_on_scheduler(lambda: {k: dask.config.get(k) for k in LOCAL_CLUSTER_CONFIG})
    assert list(got.values()) == [LOCAL_CLUSTER_CONFIG] and sched == LOCAL_CLUSTER_CONFIG
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process's own setting is back


def test_illumination_functions_as_dask_tasks_are_the_serial_ones(small_plate, tmp_path):
    # with a cluster each (plate, channel) function is a task on a worker; the functions, the files
    # and every table are those of the serial run
    import numpy as np

    from conftest import example_pipeline
    from profiler.config import load_pipeline
    from profiler.illum import plate_illumination
    from profiler.plate import discover

    cfg = example_pipeline()
    cfg["illumination"] = {"enabled": True, "filter_size": 24, "downsample": 4}
    serial = extract(small_plate, tmp_path / "serial", pipeline=cfg, workers=0, progress=False)
    dask = extract(small_plate, tmp_path / "dask", pipeline=cfg, workers=2, progress=False)
    assert_same_outputs(serial, dask)
    files = sorted(p.name for p in (serial / "illum").iterdir())
    assert files and files == sorted(p.name for p in (dask / "illum").iterdir())
    for name in files:
        assert (serial / "illum" / name).read_bytes() == (dask / "illum" / name).read_bytes()

    config = load_pipeline(cfg)
    sites = discover(small_plate, config).complete_sites
    here = plate_illumination(sites, config.channel_names, cfg["illumination"])
    with dask_client(2) as client:
        there = plate_illumination(sites, config.channel_names, cfg["illumination"], client=client)
        assert "illumination" in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert here.keys() == there.keys()
    for key in here:
        assert np.array_equal(here[key].view(np.int32), there[key].view(np.int32)), key
