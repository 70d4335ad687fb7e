"""Named :class:`~fusion.cnn.ensemble.CNNEnsemble` settings (no torch import: the profile-only
path of ``fusion train`` reads them without the ``cnn`` extra installed).

* ``"full"`` — the published recipe, the estimator's defaults: 5 members (ResNet34/50/101/50/34),
  224 px, backbone LR 1e-4 / head 1e-3, 20 epochs with early stopping on a compound-grouped
  validation share (a GPU job).
* ``"cpu"`` — one ResNet18-CBAM at 64 px, 8 epochs of 150 crops per class, sized for a 2-core CPU.
  Two deliberate differences, both because it trains from scratch on little data: the backbone
  trains at the head's rate (1e-3; the recipe's 1e-4 assumes ImageNet weights, which cannot be
  downloaded here), and there is no validation share (``val_fraction=0``, all epochs run): with
  2–4 compounds per MoA in BBBC021 a compound-grouped validation share removes whole MoAs from
  training. Pass ``pretrained_paths`` / ``val_fraction`` to change either.
* ``"tiny"`` — one ResNet10t at 32 px for one short epoch: a smoke test of the pipeline (tests, demos).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(backbones=["resnet18"], dropouts=[(0.5, 0.3, 0.1)], image_size=64, epochs=8, batch_size=32,
                target_per_class=150, lr_backbone=1e-3, lr_head=1e-3, patience=3, val_fraction=0.0),
    "full": {},
    # a smoke-test size (one ResNet10t at 32 px, one short epoch): checks that the chain runs end to end
    # on a small plate in seconds; its accuracy means nothing
    "tiny": dict(backbones=["resnet10t"], dropouts=[(0.5, 0.3, 0.1)], image_size=32, epochs=1, batch_size=32,
                 target_per_class=16, lr_backbone=1e-3, lr_head=1e-3, patience=1, val_fraction=0.0),
}
