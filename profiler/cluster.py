"""Dose- (or time-) trajectory clustering of compounds with dynamic time warping.

Each compound's treatment profiles (the median of its wells at each value of an ordering column,
e.g. ``Metadata_Concentration``), sorted along that column, form a trajectory in profile space —
a multivariate series of 1 … n steps. Compounds are compared by the DTW distance between their
trajectories (dtaidistance's ``dtw_ndim``: squared Euclidean local cost along the optimal warping
path; by default the square root of its *mean* over the path, so trajectories of different lengths
are comparable — the library's sum favours short ones), so two compounds whose phenotype develops
the same way are close even when one needs a higher dose (more steps) to get there. The baseline
distance resamples every
trajectory to a common length (linear interpolation over its rank position 0 … 1) and takes the
Euclidean distance of the flattened series.

* :func:`compound_trajectories` — per-compound trajectories from a per-well profile table;
* :func:`dtw_distances`, :func:`resampled_euclidean_distances` — compound × compound distances;
* :func:`hierarchical_clusters` — average-linkage clustering (scipy), a cut into ``k`` clusters;
  without ``k``, the cut with the best silhouette (label-free);
* :func:`score_clusters` — adjusted Rand index, purity, leave-one-compound-out 1-NN and top-3
  label accuracy of the distance neighbours, each beside a label-permutation baseline;
* :func:`cluster` — all of it on a table; :func:`cluster_command` writes ``clusters.parquet``,
  ``distances.parquet``, ``clusters.png`` (dendrogram + distance heatmap), ``scores.json`` and
  ``manifest.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.layout import CLUSTERS_FIGURE, CLUSTERS_FILE, DISTANCES_FILE, SCORES_FILE
from cellfusion_core.names import COMPOUND, CONCENTRATION, feature_columns

log = logging.getLogger(__name__)

__all__ = ["Trajectories", "compound_trajectories", "dtw_distances", "resampled_euclidean_distances",
           "resample", "hierarchical_clusters", "nearest_neighbours", "score_clusters", "ClusterResult",
           "cluster", "cluster_command", "DISTANCES"]

DISTANCES = ("dtw", "euclidean")
DTW_NORMALIZE = ("path", "none")


@dataclass
class Trajectories:
    """Compound trajectories: ``series[i]`` is an (n_steps_i, n_features) array ordered by ``steps[i]``."""

    compounds: list[str]
    series: list[np.ndarray]
    steps: list[list[float]]
    labels: list[str] | None = None
    features: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.compounds)


def compound_trajectories(profiles: pd.DataFrame, *, by: str = CONCENTRATION, compound: str = COMPOUND,
                          control: np.ndarray | pd.Series | None = None, label: str | None = None,
                          features: Sequence[str] | None = None, unit_norm: bool = True,
                          operation: str = "median") -> Trajectories:
    """Per-compound trajectories from a per-well table.

    ``control`` marks negative-control rows (they are left out: a control is not a compound with a
    dose response). Each step is the ``operation`` (median/mean) of the compound's wells at one
    value of ``by``; steps are sorted by ``by`` (numeric). With ``unit_norm`` each step is scaled
    to unit length, so the local DTW cost is a function of the cosine similarity
    (‖a − b‖² = 2 − 2 cos) — the geometry NSC and mAP use for profiles. With ``label``, every
    compound must carry one label value over its rows (missing values ignored); compounds
    without a label are left out.
    """
    for col, what in ((by, "--by"), (compound, "the compound column")):
        if col not in profiles.columns:
            raise InputError(f"{what} {col!r} is not a column of the profile table",
                             hint="name an existing column (e.g. --by Metadata_Concentration, --compound …)")
    if label is not None and label not in profiles.columns:
        raise InputError(f"label column {label!r} is not in the profile table",
                         hint="name an existing column with --label, or leave it out to cluster without scoring")
    if operation not in ("median", "mean"):
        raise ConfigError(f"unknown operation {operation!r}", hint="use median or mean")
    feats = list(features) if features is not None else feature_columns(profiles)
    if not feats:
        raise InputError("the profile table has no feature columns",
                         hint="features are the columns whose names do not start with Metadata_")
    bad = [c for c in feats if not pd.api.types.is_numeric_dtype(profiles[c])]
    if bad:
        raise InputError(f"non-numeric feature columns: {bad[:5]}", hint="metadata columns must start with 'Metadata_'")
    df = profiles
    if control is not None:
        df = df.loc[~np.asarray(control, dtype=bool)]
    df = df[df[compound].notna()]
    order = pd.to_numeric(df[by], errors="coerce")
    if order.isna().any():
        bad_vals = df.loc[order.isna(), by].astype(str).unique()[:5].tolist()
        raise InputError(f"--by column {by!r} has non-numeric or missing values in treated rows, e.g. {bad_vals}",
                         hint="order trajectories by a numeric column (a concentration or a time in hours)")
    x = df[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        cols = [c for c, ok in zip(feats, np.isfinite(x).all(0)) if not ok]
        raise InputError(f"{len(cols)} feature columns contain NaN/inf, e.g. {cols[:3]}",
                         hint="drop NaN columns (feature selection drop_na_columns) before clustering")
    steps_df = pd.DataFrame(x, columns=range(len(feats)))
    steps_df["_c"] = df[compound].astype(str).to_numpy()
    steps_df["_by"] = order.to_numpy(dtype=np.float64)
    agg = getattr(steps_df.groupby(["_c", "_by"], sort=True), operation)()
    compounds, series, steps, labels = [], [], [], []
    comp_label = None
    if label is not None:
        lab = pd.DataFrame({"_c": df[compound].astype(str).to_numpy(), "_l": df[label].to_numpy()}).dropna()
        n_lab = lab.groupby("_c")["_l"].nunique()
        if (n_lab > 1).any():
            raise InputError(f"compounds with more than one {label} value: {list(n_lab[n_lab > 1].index[:5])}",
                             hint="a trajectory is scored against one label per compound")
        comp_label = lab.groupby("_c")["_l"].first().astype(str)
    for c, block in agg.groupby(level=0, sort=True):
        if comp_label is not None and c not in comp_label.index:
            continue
        s = block.to_numpy(dtype=np.float64)
        if unit_norm:
            norm = np.linalg.norm(s, axis=1, keepdims=True)
            s = np.divide(s, norm, out=np.zeros_like(s), where=norm > 0)
        compounds.append(str(c))
        series.append(np.ascontiguousarray(s))
        steps.append([float(v) for v in block.index.get_level_values(1)])
        if comp_label is not None:
            labels.append(str(comp_label[c]))
    if comp_label is not None:
        dropped = sorted(set(df[compound].astype(str)) - set(compounds))
        if dropped:
            log.warning("%d compound(s) without a %s value left out: %s", len(dropped), label, ", ".join(dropped[:10]))
    if len(compounds) < 3:
        raise InputError(f"{len(compounds)} compound trajectories (treated rows only): clustering needs at least 3",
                         hint="check the control definition and the compound column")
    return Trajectories(compounds, series, steps, labels if label is not None else None, feats)


def dtw_distances(series: Sequence[np.ndarray], *, window: int | None = None, normalize: str = "path") -> np.ndarray:
    """Symmetric matrix of multivariate DTW distances (dtaidistance ``dtw_ndim``, C implementation).

    ``normalize="none"``: the library's distance, sqrt(Σ ‖a_i − b_j‖²) along the optimal warping
    path — it grows with the path, so long trajectories look far from everything and short ones
    near. ``"path"`` (default): sqrt of the *mean* squared step cost along that same path (the
    library's optimal path, its length n … n+m−1), so trajectories of different lengths are
    comparable. ``window``: Sakoe–Chiba band (max. index shift), None = unconstrained.
    """
    from dtaidistance import dtw, dtw_ndim

    if normalize not in DTW_NORMALIZE:
        raise ConfigError(f"unknown DTW normalization {normalize!r}", hint=f"use one of {', '.join(DTW_NORMALIZE)}")
    s = [np.array(a, dtype=np.float64, order="C", copy=True) for a in series]  # the C code needs writable buffers
    kw: dict[str, Any] = {} if window is None else {"window": int(window)}
    if normalize == "none":
        d = np.asarray(dtw_ndim.distance_matrix(s, use_c=True, **kw), dtype=np.float64)
        d = np.where(np.isfinite(d), d, d.T)  # the library may fill one triangle only
        np.fill_diagonal(d, 0.0)
        return np.minimum(d, d.T)
    n = len(s)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if s[i].shape[1] == 1:  # dtaidistance takes one-feature series as 1-D only
                path = np.asarray(dtw.warping_path(s[i][:, 0].copy(), s[j][:, 0].copy(), use_c=True, **kw))
            else:
                path = np.asarray(dtw_ndim.warping_path(s[i], s[j], use_c=True, **kw))
            cost = ((s[i][path[:, 0]] - s[j][path[:, 1]]) ** 2).sum(axis=1)
            d[i, j] = d[j, i] = np.sqrt(cost.mean())
    return d


def resample(series: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of an (n, d) series over its rank position 0 … 1 to ``length`` steps."""
    series = np.asarray(series, dtype=np.float64)
    if len(series) == 1:
        return np.repeat(series, length, axis=0)
    src = np.linspace(0.0, 1.0, len(series))
    dst = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, series[:, j]) for j in range(series.shape[1])], axis=1)


def resampled_euclidean_distances(series: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """Euclidean distances between trajectories resampled to a common ``length`` (default: the longest)."""
    from scipy.spatial.distance import pdist, squareform

    length = length or max(len(s) for s in series)
    flat = np.stack([resample(s, length).ravel() for s in series])
    return squareform(pdist(flat, "euclidean"))


def hierarchical_clusters(dist: np.ndarray, n_clusters: int | None = None, *, method: str = "average"
                          ) -> tuple[np.ndarray, np.ndarray, int]:
    """(cluster ids 1 … k, scipy linkage matrix, k). Without ``n_clusters``: the k in 2 … n−1 with the
    best silhouette on the precomputed distances (ties: the smaller k)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_score

    n = len(dist)
    if method not in ("average", "complete", "single", "weighted"):
        raise ConfigError(f"unknown linkage {method!r}",
                          hint="use average, complete, single or weighted (DTW distances are not Euclidean, so no ward)")
    z = linkage(squareform(dist, checks=False), method=method)
    if n_clusters is not None:
        if not 1 <= n_clusters <= n:
            raise ConfigError(f"--clusters {n_clusters} is outside 1 … {n} (the number of compounds)")
        return fcluster(z, n_clusters, criterion="maxclust"), z, int(n_clusters)
    best, best_k, best_ids = -np.inf, 2, None
    for k in range(2, n):
        ids = fcluster(z, k, criterion="maxclust")
        if len(np.unique(ids)) < 2 or len(np.unique(ids)) >= n:
            continue
        s = silhouette_score(dist, ids, metric="precomputed")
        if s > best + 1e-12:
            best, best_k, best_ids = s, int(len(np.unique(ids))), ids
    if best_ids is None:
        best_ids = fcluster(z, 2, criterion="maxclust")
    return best_ids, z, best_k


def nearest_neighbours(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` nearest other rows (ascending distance, ties by index)."""
    d = np.array(dist, dtype=np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :min(k, len(d) - 1)]


def _contingency(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, li), 1)
    return table


def _ari(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie) from a contingency table — sklearn's
    ``adjusted_rand_score`` without its per-call validation, which dominates 1000 permutations."""
    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1)).sum() / 2)

    n = table.sum()
    index, a, b = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = n * (n - 1) / 2
    expected = a * b / total if total else 0.0
    top = (a + b) / 2
    if top == expected:  # both partitions trivial (one cluster, or all singletons): sklearn's convention
        return 1.0
    return (index - expected) / (top - expected)


def _scores(labels: np.ndarray, clusters: np.ndarray, nn: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    table = _contingency(labels, clusters)
    hits = labels[nn[queries]] == labels[queries, None]
    return {"ari": _ari(table), "purity": float(table.max(axis=1).sum() / len(labels)),
            "nn1_accuracy": float(hits[:, 0].mean()), "top3_accuracy": float(hits[:, :3].any(axis=1).mean())}


def score_clusters(dist: np.ndarray, clusters: np.ndarray, labels: Sequence[str], *, n_permutations: int = 1000,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """ARI, purity and leave-one-compound-out 1-NN / top-3 label accuracy, each beside a permutation baseline.

    Neighbour accuracies count only queries whose label is carried by at least one other compound
    (otherwise no neighbour can be right). The baseline shuffles the labels over the compounds
    ``n_permutations`` times, keeping distances and clusters: ``baseline`` is the mean score under
    shuffling, ``baseline_p95`` its 95th percentile, ``p_value`` the fraction of shuffles scoring at
    least as high (with the +1 correction).
    """
    labels = np.asarray(labels).astype(str)
    counts = pd.Series(labels).value_counts()
    queries = np.flatnonzero(counts.reindex(labels).to_numpy() >= 2)
    if len(queries) == 0:
        raise InputError("no label value is shared by two compounds: neighbour accuracy is undefined",
                         hint="score against a label that groups compounds (e.g. --label Metadata_MoA)")
    nn = nearest_neighbours(dist, 3)
    observed = _scores(labels, clusters, nn, queries)
    rng = np.random.default_rng(seed)
    perm = {k: np.empty(n_permutations) for k in observed}
    for b in range(n_permutations):
        shuffled = rng.permutation(labels)
        q = np.flatnonzero(counts.reindex(shuffled).to_numpy() >= 2)
        for k, v in _scores(shuffled, clusters, nn, q).items():
            perm[k][b] = v
    out = {}
    for k, v in observed.items():
        out[k] = {"value": v, "baseline": float(perm[k].mean()), "baseline_p95": float(np.percentile(perm[k], 95)),
                  "p_value": float((1 + np.sum(perm[k] >= v - 1e-12)) / (1 + n_permutations))}
    out["n_compounds"] = {"value": float(len(labels))}
    out["n_queries"] = {"value": float(len(queries))}
    out["n_labels"] = {"value": float(len(counts))}
    return out


@dataclass
class ClusterResult:
    """What :func:`cluster` computes."""

    table: pd.DataFrame              # one row per compound
    distances: np.ndarray            # compound × compound, in table order
    linkage: np.ndarray              # scipy linkage matrix
    n_clusters: int
    scores: dict[str, dict[str, dict[str, float]]] | None  # distance name → score dict (with --label)
    parameters: dict[str, Any]

    def lines(self) -> list[str]:
        """Human-readable summary: clusters, and each score beside its permutation baseline."""
        p = self.parameters
        out = [f"{len(self.table)} compound trajectories ({p['by']}: "
               f"{int(self.table['n_steps'].min())}–{int(self.table['n_steps'].max())} steps), "
               f"{self.n_clusters} clusters ({p['distance']} distance, {p['linkage']} linkage)"]
        for dname, sc in (self.scores or {}).items():
            out.append(f"[{dname}] {int(sc['n_compounds']['value'])} compounds, {int(sc['n_labels']['value'])} "
                       f"{p['label']} values, {int(sc['n_queries']['value'])} neighbour queries:")
            for key, title in (("ari", "adjusted Rand index"), ("purity", "purity"),
                               ("nn1_accuracy", "1-NN label accuracy"), ("top3_accuracy", "top-3 label accuracy")):
                s = sc[key]
                out.append(f"  {title:22s} {s['value']:.3f}  (label-permutation baseline {s['baseline']:.3f}, "
                           f"p95 {s['baseline_p95']:.3f}; p = {s['p_value']:.3g})")
        return out


def distance_matrix(traj: Trajectories, distance: str, *, window: int | None = None, dtw_normalize: str = "path",
                    length: int | None = None) -> np.ndarray:
    """``dtw`` or ``euclidean`` (resampled) distances between the trajectories."""
    if distance == "dtw":
        return dtw_distances(traj.series, window=window, normalize=dtw_normalize)
    if distance == "euclidean":
        return resampled_euclidean_distances(traj.series, length)
    raise ConfigError(f"unknown distance {distance!r}", hint=f"use one of {', '.join(DISTANCES)}")


def cluster(profiles: pd.DataFrame, *, by: str = CONCENTRATION, compound: str = COMPOUND,
            control: np.ndarray | pd.Series | None = None, label: str | None = None,
            features: Sequence[str] | None = None, distance: str = "dtw", n_clusters: int | None = None,
            linkage: str = "average", n_neighbours: int = 3, unit_norm: bool = True, window: int | None = None,
            dtw_normalize: str = "path",
            n_permutations: int = 1000, seed: int = 0) -> ClusterResult:
    """Cluster compounds by their trajectories along ``by``; score against ``label`` when given.

    With a label, both distances (``dtw`` and the resampled ``euclidean`` baseline) are scored,
    each with its own clustering at the same ``k``; the outputs (table, distances, linkage) follow
    ``distance``. Without ``n_clusters``, ``k`` is the silhouette-best cut of the chosen distance.
    """
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}", hint=f"use one of {', '.join(DISTANCES)}")
    if n_neighbours < 1:
        raise ConfigError("--neighbours must be at least 1")
    traj = compound_trajectories(profiles, by=by, compound=compound, control=control, label=label,
                                 features=features, unit_norm=unit_norm)
    dist = distance_matrix(traj, distance, window=window, dtw_normalize=dtw_normalize)
    ids, z, k = hierarchical_clusters(dist, n_clusters, method=linkage)
    nn = nearest_neighbours(dist, n_neighbours)
    names = np.asarray(traj.compounds)
    table = pd.DataFrame({compound: names, "Cluster": ids.astype(np.int64),
                          "n_steps": [len(s) for s in traj.series], "Steps": traj.steps,
                          "Nearest": [names[r].tolist() for r in nn],
                          "Nearest_Distance": [dist[i, r].round(6).tolist() for i, r in enumerate(nn)]})
    scores = None
    if traj.labels is not None:
        table.insert(1, label, traj.labels)
        scores = {}
        for dname in (distance, *[d for d in DISTANCES if d != distance]):
            d = dist if dname == distance else distance_matrix(traj, dname, window=window,
                                                                 dtw_normalize=dtw_normalize)
            cl = ids if dname == distance else hierarchical_clusters(d, k, method=linkage)[0]
            scores[dname] = score_clusters(d, cl, traj.labels, n_permutations=n_permutations, seed=seed)
    params = {"by": by, "compound": compound, "label": label, "distance": distance, "n_clusters": n_clusters,
              "n_clusters_used": k, "k_rule": "given" if n_clusters else "best silhouette", "linkage": linkage,
              "n_neighbours": n_neighbours, "unit_norm": unit_norm, "window": window,
              "dtw_normalize": dtw_normalize,
              "n_permutations": n_permutations, "seed": seed, "n_features": len(traj.features)}
    return ClusterResult(table, dist, z, k, scores, params)


def plot_clusters(result: ClusterResult, path: str | Path, compound: str) -> Path:
    """Dendrogram beside the distance heatmap in dendrogram order → PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    from cellfusion_core import io

    names = result.table[compound].astype(str).tolist()
    label = result.parameters.get("label")
    if label:
        names = [f"{n} ({lab})" for n, lab in zip(names, result.table[label].astype(str))]
    n = len(names)
    size = min(4 + 0.22 * n, 40)
    fig = plt.figure(figsize=(size * 1.45, size))
    ax_d = fig.add_axes((0.02, 0.25, 0.18, 0.69))
    z, k = result.linkage, result.n_clusters
    # colour the branches below the cut into k clusters (midway between the merges that make k−1 and k)
    cut = float(np.mean(z[len(z) - k:len(z) - k + 2, 2])) if 1 < k <= len(z) else 0.0
    dn = dendrogram(z, orientation="left", no_labels=True, ax=ax_d, color_threshold=cut)
    ax_d.invert_yaxis()
    ax_d.axis("off")
    order = dn["leaves"]
    ax_h = fig.add_axes((0.21, 0.25, 0.5, 0.69))
    im = ax_h.imshow(result.distances[np.ix_(order, order)], cmap="viridis_r", aspect="auto",
                     interpolation="nearest")
    ticks = [names[i] for i in order]
    fs = max(3, min(9, int(400 / max(n, 1))))
    ax_h.set_yticks(range(n), ticks, fontsize=fs)
    ax_h.yaxis.tick_right()
    ax_h.set_xticks(range(n), ticks, rotation=90, fontsize=fs)
    cax = fig.add_axes((0.95, 0.25, 0.012, 0.69))
    fig.colorbar(im, cax=cax, label=f"{result.parameters['distance']} distance")
    ax_h.set_title(f"{result.parameters['distance'].upper()} distances between {result.parameters['by']} "
                   f"trajectories, {result.n_clusters} clusters", fontsize=10)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def cluster_command(profiles_path: str | Path, out_dir: str | Path, *, by: str = CONCENTRATION,
                    compound: str = COMPOUND, control: np.ndarray | pd.Series | None = None,
                    table: pd.DataFrame | None = None, columns: dict | None = None, **kwargs: Any) -> ClusterResult:
    """:func:`cluster` on a profile file; writes clusters.parquet, distances.parquet, clusters.png,
    scores.json (with a label) and manifest.json into ``out_dir``. Everything is computed before the
    first file is written, so bad input leaves no partial folder. ``table``: the already-read table;
    ``columns``: the resolved column roles, recorded in the manifest."""
    from cellfusion_core import io
    from profiler.evaluate import read_profiles

    profiles_path = Path(profiles_path)
    if table is None:
        table = read_profiles(profiles_path)
    result = cluster(table, by=by, compound=compound, control=control, **kwargs)
    out_dir = Path(out_dir)
    names = result.table[compound].astype(str).tolist()
    io.write_parquet(result.table, out_dir / CLUSTERS_FILE)
    dist = pd.DataFrame(result.distances, columns=names)
    dist.insert(0, compound, names)
    io.write_parquet(dist, out_dir / DISTANCES_FILE)
    plot_clusters(result, out_dir / CLUSTERS_FIGURE, compound)
    outputs = {CLUSTERS_FILE: {"rows": len(result.table)}, DISTANCES_FILE: {"rows": len(dist)}, CLUSTERS_FIGURE: {}}
    if result.scores is not None:
        io.write_json(result.scores, out_dir / SCORES_FILE)
        outputs[SCORES_FILE] = {}
    io.write_manifest(out_dir, command="profiler cluster", inputs={"profiles": profiles_path},
                      parameters={**result.parameters, "columns": columns}, outputs=outputs,
                      extra={"scores": result.scores} if result.scores is not None else None)
    return result
