"""A timm backbone with CBAM after every stage and the recipe's MLP head.

``CBAMNet("resnet50", in_chans=3, n_classes=12)`` builds ``timm.create_model(name,
pretrained=False, in_chans=C)`` without its classifier, attaches a :class:`~fusion.cnn.cbam.CBAM`
to the output of every stage listed in the model's ``feature_info`` (the stride-2 stem is not a
stage and gets none), and ends in the head

    global average pool → Dropout(d0) → Linear(C_final, 1024) → BatchNorm → ReLU → Dropout(d1)
                        → Linear(1024, 512) → BatchNorm → ReLU → [embedding] → Dropout(d2)
                        → Linear(512, n_classes)

The published head reads 2048→1024→512→classes for ResNet-50; the first width here is the
backbone's final channel count (512 for ResNet-18/34, 2048 for ResNet-50/101). The dropout
schedule ``dropouts=(d0, d1, d2)`` decreases from input to output (default 0.5, 0.3, 0.1).

CBAM modules are attached with forward hooks, so the backbone's parameter names stay timm's and a
local timm safetensors file loads into it unchanged (``pretrained_path``). Any timm model name with
``feature_info`` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fusion.cnn.cbam import CBAM
from cellfusion_core.errors import ConfigError, ModelFileError

DEFAULT_DROPOUTS = (0.5, 0.3, 0.1)
DEFAULT_HIDDEN = (1024, 512)


def _stages(backbone: nn.Module) -> list[dict]:
    info = list(getattr(backbone, "feature_info", []) or [])
    if hasattr(info, "info"):  # timm FeatureInfo object
        info = info.info
    info = [dict(i) for i in info]
    if len(info) > 1 and info[0].get("reduction", 0) <= 2:
        info = info[1:]  # the stem, not a stage
    return info


class CBAMNet(nn.Module):
    """timm backbone + CBAM after every stage + GAP/MLP head.

    Parameters
    ----------
    backbone:
        Any timm model name (``resnet18``, ``resnet50``, ``convnext_tiny`` …).
    in_chans:
        Number of image channels.
    n_classes:
        Number of output classes.
    dropouts:
        Dropout before each of the three linear layers, e.g. (0.5, 0.3, 0.1).
    hidden:
        Widths of the two hidden layers (1024, 512).
    pretrained_path:
        Optional local ``.safetensors`` file with timm weights for the backbone (no download).
    """

    def __init__(self, backbone: str = "resnet50", in_chans: int = 3, n_classes: int = 2, *,
                 dropouts: Sequence[float] = DEFAULT_DROPOUTS, hidden: Sequence[int] = DEFAULT_HIDDEN,
                 cbam_reduction: int = 16, pretrained_path: str | Path | None = None):
        super().__init__()
        import timm

        if len(dropouts) != len(hidden) + 1:
            raise ConfigError(f"dropouts needs {len(hidden) + 1} values (one per linear layer), got {list(dropouts)}",
                              hint="e.g. dropouts=(0.5, 0.3, 0.1)")
        if any(not 0 <= d < 1 for d in dropouts):
            raise ConfigError(f"dropout rates must lie in [0, 1), got {list(dropouts)}")
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_chans,
                                              num_classes=0, global_pool="")
        except RuntimeError as exc:  # unknown model
            raise ConfigError(f"timm has no model named {backbone!r} ({exc})",
                              hint="see timm.list_models(), e.g. resnet18, resnet50, resnet101") from exc
        if pretrained_path is not None:
            load_backbone_weights(self.backbone, pretrained_path)
        stages = _stages(self.backbone)
        if not stages:
            raise ConfigError(f"timm model {backbone!r} has no feature_info; CBAM cannot find its stages")
        self.stage_names = [s["module"] for s in stages]
        self.cbam = nn.ModuleDict({n.replace(".", "_"): CBAM(s["num_chs"], cbam_reduction)
                                   for n, s in zip(self.stage_names, stages)})
        for name in self.stage_names:
            module = self.backbone.get_submodule(name)
            module.register_forward_hook(self._make_hook(name.replace(".", "_")))
        self.dropouts = tuple(float(d) for d in dropouts)
        widths = [int(self.backbone.num_features), *[int(h) for h in hidden]]
        self.pool = nn.AdaptiveAvgPool2d(1)
        layers: list[nn.Module] = []
        for i in range(len(hidden)):
            layers += [nn.Dropout(self.dropouts[i]), nn.Linear(widths[i], widths[i + 1]),
                       nn.BatchNorm1d(widths[i + 1]), nn.ReLU(inplace=True)]
        self.neck = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(self.dropouts[-1]), nn.Linear(widths[-1], n_classes))
        self.embedding_dim = widths[-1]

    def _make_hook(self, key: str):
        def hook(_module, _inputs, output):
            return self.cbam[key](output)
        return hook

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embedding (B, 512)."""
        fmap = self.backbone.forward_features(x)
        return self.neck(torch.flatten(self.pool(fmap), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the head learning rate: CBAM modules, neck and classifier."""
        return [*self.cbam.parameters(), *self.neck.parameters(), *self.classifier.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local timm ``.safetensors`` state dict into ``backbone`` (classifier keys ignored)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file() or path.suffix != ".safetensors":
        raise ModelFileError("pretrained weights must be an existing .safetensors file", path=path,
                             hint="export timm weights with safetensors.torch.save_file(model.state_dict(), ...)")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"not a readable safetensors file ({exc})", path=path) from exc
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    missing = sorted(set(own) - set(usable))
    if not usable:
        raise ModelFileError("no tensor in this file matches the backbone's parameter names and shapes", path=path,
                             hint="is it the weights of the same timm model?")
    backbone.load_state_dict(usable, strict=False)
    import logging
    logging.getLogger(__name__).info("loaded %d tensors from %s (%d skipped, %d left at init: %s)", len(usable),
                                     path, len(skipped), len(missing), ", ".join(missing[:5]))
