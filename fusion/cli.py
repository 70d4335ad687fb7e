"""``fusion``: profiles (+ crops) → models → predictions and reports. A thin typer layer over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cellfusion_core.cli import COLUMN_OPTION_HELP, err_console, make_app, run_main
from cellfusion_core.layout import METRICS_FILE

app = make_app("Profiles (+ single-cell crops) → XGBoost / CNN / stacked models → predictions and SHAP reports.")


@app.command()
def train(
    profiles: Path = typer.Argument(..., help="Per-well profile table (profiles.parquet from `profiler extract`, or CSV)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="Column to predict (default: the compound column; "
                                                                    "'compound' or 'moa' name the resolved column; "
                                                                    "'perturbed': negative controls vs every other "
                                                                    "well, ROC AUC reported)."),
    group_by: Optional[list[str]] = typer.Option(
        None, "--group-by", help="Column(s) never split between training and test folds. Default from the label: "
                                 "compounds for any label but the compound (leave-compound-out); for the compound, "
                                 "replicate plates (>= 2 plates), else wells."),
    compound: Optional[str] = typer.Option(None, "--compound", help=COLUMN_OPTION_HELP["compound"]),
    concentration: Optional[str] = typer.Option(None, "--concentration", help=COLUMN_OPTION_HELP["concentration"]),
    moa: Optional[str] = typer.Option(None, "--moa", help=COLUMN_OPTION_HELP["moa"]),
    batch: Optional[str] = typer.Option(None, "--batch", help=COLUMN_OPTION_HELP["batch"]),
    control: Optional[str] = typer.Option(None, "--control", help=COLUMN_OPTION_HELP["control"]),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings",
                                              help="Per-well CNN embeddings (from `fusion embed`) to append to the features."),
    n_splits: int = typer.Option(5, "--folds", help="Cross-validation folds (fewer if there are fewer groups)."),
    seed: int = typer.Option(0, help="Random seed."),
    cell_count: bool = typer.Option(True, "--cell-count/--no-cell-count",
                                    help="Use cells per well (Metadata_Object_Count) as a feature."),
    n_jobs: int = typer.Option(1, "--jobs", "-j", help="XGBoost threads (1 is fastest on small tables)."),
    crops: Optional[Path] = typer.Option(None, "--crops",
                                         help="Single-cell crops of the same wells (folder with crops.tif + crops.parquet, "
                                              "or a crop TIFF with its table): per fold a CNN on the training wells' "
                                              "crops, its per-well embeddings joined to the profiles for a second "
                                              "XGBoost, the CNN's soft vote, and the stack of the three."),
    cnn: bool = typer.Option(True, "--cnn/--no-cnn", help="--no-cnn: profile path only, even when --crops is given."),
    cnn_config: str = typer.Option("cpu", "--cnn-config", help="CNN preset: cpu (small, 2-core friendly), full (GPU) or tiny "
                                                                    "(a smoke test: seconds, accuracy meaningless)."),
    stack_coupling: str = typer.Option("per_class", "--stack-coupling",
                                       help="Meta-learner: per_class (a weight per base model and class), shared (one "
                                            "weight per base model) or full (a weight per input and class, with "
                                            "class intercepts)."),
) -> None:
    """Grouped cross-validated XGBoost; with --crops also CNN embeddings → XGBoost, the CNN vote and their stack."""
    from fusion.train import train as _train

    path = _train(profiles, out, label=label, group_by=group_by or None, embeddings=embeddings,
                  n_splits=n_splits, seed=seed, include_cell_count=cell_count, n_jobs=n_jobs,
                  crops=crops, cnn=cnn, cnn_config=cnn_config, stack_coupling=stack_coupling,
                  compound=compound, concentration=concentration, moa=moa, batch=batch, control=control)
    import json

    m = json.loads((path / METRICS_FILE).read_text())
    acc, g = m["scores"]["accuracy"], m["grouping"]
    typer.echo(f"out-of-fold accuracy {acc['value']:.3f} (majority baseline {acc['majority']:.3f}; {m['n']} rows)")
    typer.echo(f"folds: {g['reason']}")
    for note in g["notes"]:
        typer.echo(f"note: {note}")
    if g["single_group_classes"]:
        typer.echo(f"warning: {len(g['single_group_classes'])} class(es) lie in a single group and cannot be "
                   f"predicted out of fold ({', '.join(list(g['single_group_classes'])[:10])}); "
                   f"accuracy ceiling {g['accuracy_ceiling']:.3f}")
    err_console.print(f"model written to {path}")


@app.command()
def report(
    model_dir: Path = typer.Argument(..., help="Model folder written by `fusion train`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default MODEL_DIR/report.html)."),
) -> None:
    """Write a self-contained report.html (metrics vs baselines, confusion matrix, ROC/PR, SHAP)."""
    from fusion.report import report as _report

    path = _report(model_dir, out)
    err_console.print(f"report written to {path}")


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="Model folder written by `fusion train`."),
    profiles: Path = typer.Argument(..., help="Profile table of the wells to predict."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output folder or .parquet file (default: predictions/ beside PROFILES)."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Per-well CNN embeddings, if the model used them."),
    crops: Optional[Path] = typer.Option(None, "--crops",
                                         help="Single-cell crops of the same wells (for a model trained with --crops): "
                                              "runs the whole chain — CNN embeddings → XGBoost, XGBoost on profiles, "
                                              "the CNN's soft vote, and their stack."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (for the CNN, with --crops)."),
) -> None:
    """Per-class probabilities for new wells → predictions.parquet."""
    from fusion.predict import predict as _predict

    path = _predict(model_dir, profiles, out, embeddings, crops=crops, device=device)
    err_console.print(f"predictions written to {path}")


@app.command("train-cnn")
def train_cnn(
    crops: Path = typer.Argument(..., help="Crop stack: a folder from `profiler extract --crops`, or an (N,H,W,C) TIFF "
                                           "with its CSV/Parquet table beside it."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (safetensors + JSON)."),
    label: str = typer.Option("Metadata_MoA", "--label", "-l", help="Column to predict (moa, Metadata_Compound …)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Column grouping the validation split "
                                                                    "(e.g. Metadata_Compound or Metadata_Plate)."),
    table: Optional[Path] = typer.Option(None, "--table", help="Crop table, when it is not beside the TIFF."),
    config: str = typer.Option("full", "--config", help="Preset: full (5 members, 224 px; a GPU job) or cpu (small)."),
    backbone: Optional[list[str]] = typer.Option(None, "--backbone", help="timm backbone per member (repeat)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Side crops are resized to."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs (early stopping may end sooner)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size (all processes)."),
    balance: str = typer.Option("sample", "--balance", help="sample (under/over-sample), weights or none."),
    target_per_class: Optional[int] = typer.Option(None, "--target-per-class", help="Cells per class per epoch."),
    clahe: bool = typer.Option(False, "--clahe", help="CLAHE per channel."),
    denoise_sigma: float = typer.Option(0.0, "--denoise-sigma", help="Gaussian denoising sigma (0 = off)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile (GPU)."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    seed: int = typer.Option(0, help="Random seed (member i uses seed + i)."),
) -> None:
    """Train the CBAM-ResNet ensemble on single-cell crops (torchrun --nproc_per_node=N for DDP)."""
    import torch

    from fusion.cnn.ensemble import train_cnn as _train_cnn

    if threads:
        torch.set_num_threads(threads)
    extra = {"balance": balance, "clahe": clahe, "denoise_sigma": denoise_sigma, "precision": precision}
    if target_per_class is not None:
        extra["target_per_class"] = target_per_class
    path = _train_cnn(crops, out, label=label, group_by=group_by, table=table, config=config, backbones=backbone,
                      image_size=image_size, epochs=epochs, batch_size=batch_size, device=device, compile=compile,
                      seed=seed, **extra)
    err_console.print(f"CNN ensemble written to {path}")


@app.command("train-ssl")
def train_ssl(
    crops: Path = typer.Argument(..., help="Crop stack: a folder from `profiler extract --crops`, or an (N,H,W,C) TIFF "
                                           "with its CSV/Parquet table beside it. No label column is read."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (safetensors + JSON)."),
    method: str = typer.Option("simclr", "--method", help="simclr (contrastive, NT-Xent) or autoencoder."),
    backbone: str = typer.Option("resnet18", "--backbone", help="timm backbone name (CBAM is added after every stage)."),
    image_size: int = typer.Option(64, "--image-size", help="Side crops are resized to."),
    epochs: int = typer.Option(20, "--epochs", help="Epochs (0 = the seeded random initialisation, a baseline)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Crops per batch (SimCLR contrasts 2 views of each)."),
    crops_per_epoch: Optional[int] = typer.Option(None, "--crops-per-epoch", help="Crops drawn per epoch (default all)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW, one-cycle schedule)."),
    temperature: float = typer.Option(0.2, "--temperature", help="NT-Xent temperature (simclr)."),
    latent_dim: int = typer.Option(128, "--latent-dim", help="Bottleneck width = embedding width (autoencoder)."),
    table: Optional[Path] = typer.Option(None, "--table", help="Crop table, when it is not beside the TIFF."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Self-supervised crop embeddings (SimCLR or a convolutional autoencoder; no labels) → model folder for `fusion embed`."""
    import torch

    from fusion.cnn.ssl import train_ssl as _train_ssl

    if threads:
        torch.set_num_threads(threads)
    path = _train_ssl(crops, out, method=method, table=table, backbone=backbone, image_size=image_size, epochs=epochs,
                      batch_size=batch_size, device=device, seed=seed, crops_per_epoch=crops_per_epoch, lr=lr,
                      temperature=temperature, latent_dim=latent_dim, precision=precision)
    err_console.print(f"self-supervised model written to {path}")


@app.command()
def embed(
    model_dir: Path = typer.Argument(..., help="Model folder written by `fusion train-cnn` or `fusion train-ssl`."),
    crops: Path = typer.Argument(..., help="Crop stack (folder or TIFF + table)."),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write."),
    operation: str = typer.Option("mean", "--aggregate", help="Per-well mean, median, or none (one row per cell)."),
    table: Optional[Path] = typer.Option(None, "--table", help="Crop table, when it is not beside the TIFF."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Per-well embeddings (Metadata_* keys + Embedding_0 … Embedding_n) → Parquet, from a CNN ensemble or an SSL model."""
    from fusion.cnn.ensemble import embed_crops

    path = embed_crops(model_dir, crops, out, operation=operation, table=table, device=device)
    err_console.print(f"embeddings written to {path}")


def main() -> None:
    run_main(app)
