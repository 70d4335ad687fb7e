"""BBBC021 (Ljosa 2013 per-well means): do compounds' dose trajectories cluster by mechanism?

Profiles: the per-well table with MoA (profiler.datasets.read_bbbc021_wells), normalised with the
project's preset ``bbbc021_best`` (chosen without MoA labels; docs/profiles.md). Each annotated
compound's treatment medians, ordered by concentration, form its trajectory (DMSO left out; the
table holds 38 compounds at 1–7 concentrations). Compared, each with the same scoring
(profiler.cluster.score_clusters: adjusted Rand index and purity of an average-linkage cut into
k = 12 clusters — the number of MoAs, stated, not tuned — and leave-one-compound-out 1-NN / top-3
MoA accuracy of the distance neighbours, each beside the mean over 1000 label permutations):

* ``dtw`` — DTW, mean step cost along the warping path (``profiler cluster`` default);
* ``dtw_raw`` — DTW, the library's summed cost (grows with the path: favours short trajectories);
* ``euclidean`` — Euclidean between trajectories resampled to the longest length (7);
* ``mean_profile`` / ``top_dose`` — no trajectory: the Euclidean distance of the (unit-step) mean
  profile over all concentrations, or of the highest concentration's profile alone.

A last line gives the label-free cut (best silhouette) of the DTW clustering and its scores.

    python benchmarks/bbbc021_dtw.py [--permutations 1000]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.spatial.distance import pdist, squareform  # noqa: E402

from benchmarks._common import emit, require_shared  # noqa: E402
from profiler.cluster import (compound_trajectories, dtw_distances, hierarchical_clusters,  # noqa: E402
                              resampled_euclidean_distances, score_clusters)
from cellfusion_core.columns import control_mask  # noqa: E402
from profiler.datasets import read_bbbc021_wells  # noqa: E402
from cellfusion_core.names import MOA  # noqa: E402
from profiler.profiles import apply_recipe  # noqa: E402

METRICS = (("ari", "adjusted Rand index"), ("purity", "purity"), ("nn1_accuracy", "1-NN MoA accuracy"),
           ("top3_accuracy", "top-3 MoA accuracy"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--permutations", type=int, default=1000, help="label permutations of the baseline")
    ap.add_argument("--preset", default="bbbc021_best", help="profile recipe applied to the per-well table")
    args = ap.parse_args()
    folder = require_shared("bbbc021", "ljosa2013_per_well_mean.csv.gz").parent
    warnings.filterwarnings("ignore")
    wells = read_bbbc021_wells(folder)
    prof = apply_recipe(wells, args.preset)
    traj = compound_trajectories(prof, control=control_mask(prof), label=MOA)
    lengths = np.array([len(s) for s in traj.series])
    k = len(set(traj.labels))
    emit("bbbc021 dose trajectories", len(traj), "compounds", baseline=None, preset=args.preset,
         steps_min=int(lengths.min()), steps_median=float(np.median(lengths)), steps_max=int(lengths.max()),
         single_step_compounds=int((lengths == 1).sum()), moas=k, features=len(traj.features))
    dist = {"dtw": dtw_distances(traj.series), "dtw_raw": dtw_distances(traj.series, normalize="none")}
    dist["euclidean"] = resampled_euclidean_distances(traj.series)
    dist["mean_profile"] = squareform(pdist(np.stack([s.mean(axis=0) for s in traj.series])))
    dist["top_dose"] = squareform(pdist(np.stack([s[-1] for s in traj.series])))
    clusters = {}
    for name, d in dist.items():
        ids, _, _ = hierarchical_clusters(d, k)
        clusters[name] = ids
        sc = score_clusters(d, ids, traj.labels, n_permutations=args.permutations, seed=0)
        for key, title in METRICS:
            s = sc[key]
            emit(f"bbbc021 trajectory clustering [{name}] {title}", round(s["value"], 4), key,
                 baseline=round(s["baseline"], 4), baseline_kind=f"mean of {args.permutations} MoA permutations",
                 baseline_p95=round(s["baseline_p95"], 4), p_value=s["p_value"], k=k,
                 n_compounds=int(sc["n_compounds"]["value"]), n_queries=int(sc["n_queries"]["value"]))
    from sklearn.metrics import adjusted_rand_score

    emit("bbbc021 agreement of the dtw and euclidean clusterings",
         round(adjusted_rand_score(clusters["dtw"], clusters["euclidean"]), 4), "ARI between the two cuts",
         baseline=None)
    ids, _, k_sil = hierarchical_clusters(dist["dtw"])
    sc = score_clusters(dist["dtw"], ids, traj.labels, n_permutations=args.permutations, seed=0)
    emit("bbbc021 trajectory clustering [dtw, label-free k by silhouette] adjusted Rand index",
         round(sc["ari"]["value"], 4), "ari", baseline=round(sc["ari"]["baseline"], 4), k=k_sil,
         purity=round(sc["purity"]["value"], 4), purity_baseline=round(sc["purity"]["baseline"], 4))


if __name__ == "__main__":
    main()
