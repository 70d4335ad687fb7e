"""profiler.cluster: DTW between dose trajectories recovers planted groups; scores beside permutation
baselines; `profiler cluster` writes its folder or one error line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from profiler.cluster import (cluster, compound_trajectories, dtw_distances, hierarchical_clusters,
                              resample, resampled_euclidean_distances, score_clusters)
from conftest import run_cli_out
from cellfusion_core.errors import InputError

N_FEATURES = 12


def planted_table(seed: int = 0, n_groups: int = 3, per_group: int = 4, noise: float = 0.03) -> pd.DataFrame:
    """Per-well table: each group (MoA) has a curved dose path through feature space (from the origin,
    along direction u, then bending towards v). A compound of the group walks the path from a
    potency-dependent start to its end in 2–7 concentrations (3 wells each, noisy); DMSO wells sit at
    the origin. Same group ⇒ same path walked at a different pace and length: what DTW aligns."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        u, v = rng.normal(size=N_FEATURES), rng.normal(size=N_FEATURES)
        u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
        for c in range(per_group):
            n_steps = [2, 4, 5, 7][c % 4]
            start = [0.25, 0.2, 0.4, 0.3][c % 4]
            for i, t in enumerate(np.linspace(start, 1.0, n_steps)):
                centre = 3 * (min(t, 0.5) * u + max(t - 0.5, 0.0) * v)
                conc = float(10.0 ** (i - 3))
                for rep in range(3):
                    x = centre + rng.normal(0, noise, N_FEATURES)
                    rows.append({"Metadata_Compound": f"g{g}c{c}", "Metadata_Concentration": conc,
                                 "Metadata_MoA": f"M{g}", "Metadata_Plate": f"P{rep}",
                                 **{f"f{j}": x[j] for j in range(N_FEATURES)}})
    for rep in range(6):
        x = rng.normal(0, noise, N_FEATURES)
        rows.append({"Metadata_Compound": "DMSO", "Metadata_Concentration": 0.0, "Metadata_MoA": "DMSO",
                     "Metadata_Plate": f"P{rep % 3}", **{f"f{j}": x[j] for j in range(N_FEATURES)}})
    return pd.DataFrame(rows)


def dmso(df: pd.DataFrame) -> np.ndarray:
    return (df["Metadata_Compound"] == "DMSO").to_numpy()


def test_dtw_values_by_hand():
    a = np.array([[0.0], [1.0], [2.0]])
    b = np.array([[0.0], [2.0]])
    # optimal path (0,0) (1,·) (2,1): step costs 0, 1, 0 → raw sqrt(1) = 1; path mean 1/3
    d_raw = dtw_distances([a, b], normalize="none")
    d_path = dtw_distances([a, b], normalize="path")
    assert d_raw[0, 1] == pytest.approx(1.0) and d_raw[1, 0] == pytest.approx(1.0)
    assert d_path[0, 1] == pytest.approx(np.sqrt(1 / 3))
    assert np.all(np.diag(d_path) == 0)
    # warping invariance: repeating steps costs nothing under DTW, but not under resampled Euclidean
    c = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    c_slow = c[[0, 0, 0, 1, 2, 2]]
    assert dtw_distances([c, c_slow])[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert resampled_euclidean_distances([c, c_slow])[0, 1] > 0.5
    # multivariate: a per-dimension (or broken) distance would not give this value
    p, q = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])
    assert dtw_distances([p, q], normalize="none")[0, 1] == pytest.approx(5.0)


def test_resample_endpoints_and_single_step():
    s = np.array([[0.0, 10.0], [1.0, 20.0], [4.0, 40.0]])
    r = resample(s, 5)
    assert r.shape == (5, 2) and np.allclose(r[0], s[0]) and np.allclose(r[-1], s[-1])
    assert np.allclose(r[2], s[1])
    assert np.allclose(resample(s[:1], 4), np.repeat(s[:1], 4, axis=0))


def test_trajectories_order_controls_and_labels():
    df = planted_table()
    tr = compound_trajectories(df.sample(frac=1.0, random_state=1), control=None, label="Metadata_MoA")
    assert "DMSO" in tr.compounds                                   # no control given → a compound like any other
    tr = compound_trajectories(df, control=dmso(df), label="Metadata_MoA")
    assert "DMSO" not in tr.compounds and len(tr) == 12
    i = tr.compounds.index("g0c3")
    assert tr.steps[i] == sorted(tr.steps[i]) and len(tr.series[i]) == 7
    assert np.allclose(np.linalg.norm(tr.series[i], axis=1), 1.0)     # unit_norm
    assert tr.labels[i] == "M0"
    bad = df.copy()
    bad.loc[bad["Metadata_Compound"] == "g0c0", "Metadata_MoA"] = ["M0", "M1"] * 3
    with pytest.raises(InputError, match="more than one Metadata_MoA"):
        compound_trajectories(bad, control=dmso(bad), label="Metadata_MoA")
    with pytest.raises(InputError, match="--by"):
        compound_trajectories(df, by="Metadata_Time")


def test_dtw_recovers_planted_groups_above_the_permutation_baseline():
    df = planted_table()
    res = cluster(df, control=dmso(df), label="Metadata_MoA", n_clusters=3, n_permutations=300, unit_norm=False)
    sc = res.scores["dtw"]
    assert sc["ari"]["value"] == pytest.approx(1.0)
    assert sc["purity"]["value"] == pytest.approx(1.0)
    assert sc["nn1_accuracy"]["value"] == 1.0 and sc["top3_accuracy"]["value"] == 1.0
    assert abs(sc["ari"]["baseline"]) < 0.1 and sc["ari"]["p_value"] < 0.01
    assert sc["nn1_accuracy"]["baseline"] < 0.5
    t = res.table
    assert set(t.columns) >= {"Metadata_Compound", "Metadata_MoA", "Cluster", "Nearest", "Nearest_Distance"}
    # every planted group is one cluster, and each compound's nearest compounds are its group mates
    assert t.groupby("Metadata_MoA")["Cluster"].nunique().eq(1).all()
    for comp, near in zip(t["Metadata_Compound"], t["Nearest"]):
        assert all(n[:2] == comp[:2] for n in near), (comp, near)
    # the resampled Euclidean baseline is scored on the same compounds
    assert set(res.scores) == {"dtw", "euclidean"}
    # label-free k (silhouette) finds the three planted groups
    res2 = cluster(df, control=dmso(df), n_permutations=10, unit_norm=False)
    assert res2.n_clusters == 3 and res2.scores is None


def test_shuffled_distances_lose_the_groups():
    """The scores follow the distances: with a distance that ignores the trajectories they fall to chance."""
    df = planted_table()
    tr = compound_trajectories(df, control=dmso(df), label="Metadata_MoA", unit_norm=False)
    d = dtw_distances(tr.series)
    rng = np.random.default_rng(0)
    p = rng.permutation(len(d))
    d_bad = d[np.ix_(p, p)]
    ids, _, _ = hierarchical_clusters(d_bad, 3)
    sc = score_clusters(d_bad, ids, tr.labels, n_permutations=200)
    assert sc["ari"]["value"] < 0.5 and sc["nn1_accuracy"]["value"] < 0.75


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    return run_cli_out(capsys, "profiler", *args)


def test_cli_writes_clusters_figure_and_manifest(tmp_path, capsys):
    df = planted_table()
    src = tmp_path / "profiles.parquet"
    df.to_parquet(src)
    out = tmp_path / "clusters"
    code, text, err = _cli(capsys, "cluster", src, "-o", out, "--label", "moa", "--clusters", "3",
                           "--permutations", "100")
    assert code == 0, err
    assert "compound=Metadata_Compound" in text and "ordered by Metadata_Concentration" in text
    assert "adjusted Rand index" in text and "baseline" in text
    t = pd.read_parquet(out / "clusters.parquet")
    assert len(t) == 12 and "DMSO" not in set(t["Metadata_Compound"])
    assert t["Cluster"].nunique() == 3 and len(t["Nearest"].iloc[0]) == 3
    dist = pd.read_parquet(out / "distances.parquet")
    assert dist.shape == (12, 13)
    assert (out / "clusters.png").stat().st_size > 5000
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == "profiler cluster" and man["parameters"]["distance"] == "dtw"
    assert man["scores"]["dtw"]["ari"]["value"] == pytest.approx(1.0)
    # bad --by: one error line, exit 2, no output folder
    out2 = tmp_path / "bad"
    code, _, err = _cli(capsys, "cluster", src, "--by", "Metadata_Time", "-o", out2)
    assert code == 2 and err.startswith("error:") and err.count("error:") == 1 and "Metadata_Time" in err
    assert not out2.exists()
    # foreign column names (LINCS-style): named with the shared options; the DMSO rows have an empty compound
    lincs = df.rename(columns={"Metadata_Compound": "Metadata_broad_sample", "Metadata_Concentration": "Metadata_mmoles_per_liter",
                               "Metadata_MoA": "Metadata_moa"})
    lincs.loc[lincs["Metadata_broad_sample"] == "DMSO", "Metadata_broad_sample"] = ""
    src3 = tmp_path / "lincs.csv"
    lincs.to_csv(src3, index=False)
    code, text, err = _cli(capsys, "cluster", src3, "-o", tmp_path / "lincs", "--label", "moa",
                           "--clusters", "3", "--permutations", "50")
    assert code == 0, err
    assert "ordered by Metadata_mmoles_per_liter" in text
    t3 = pd.read_parquet(tmp_path / "lincs" / "clusters.parquet")
    assert len(t3) == 12 and set(t3.columns) >= {"Metadata_broad_sample", "Metadata_moa"}
    assert t3.set_index("Metadata_broad_sample")["Cluster"].equals(t.set_index("Metadata_Compound")["Cluster"]
                                                                   .rename_axis("Metadata_broad_sample"))


def test_ari_and_purity_match_definitions():
    from sklearn.metrics import adjusted_rand_score

    from profiler.cluster import _ari, _contingency

    rng = np.random.default_rng(3)
    for _ in range(20):
        lab, cl = rng.integers(0, 4, 30).astype(str), rng.integers(1, 6, 30)
        assert _ari(_contingency(lab, cl)) == pytest.approx(adjusted_rand_score(lab, cl))
    lab = np.array(list("aabbbc"))
    cl = np.array([1, 1, 1, 2, 2, 2])
    assert _contingency(lab, cl).max(axis=1).sum() / 6 == pytest.approx(4 / 6)   # purity
