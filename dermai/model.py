"""SimCLR ResNet-18: a torchvision trunk, a projection head for NT-Xent, a classifier on trunk features.

Unlike the paper's code, the classifier reads the 512-d trunk features, not the projection: SimCLR's
projection discards information useful for the downstream task (Chen et al. 2020, §4.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import resnet18

from dermai.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from dermai.preprocess import shades_of_gray


class SimCLRResNet18(nn.Module):
    """Trunk → 512-d features; `project` gives the 128-d SimCLR embedding, `forward` the class logits.

    `forward` returns one logits tensor (pytorch-grad-cam needs a single output).
    """

    def __init__(
        self,
        num_classes: int,
        cfg: ModelConfig | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        """`mean`/`std` are the input normalisation, needed only to undo it for colour constancy."""
        super().__init__()
        cfg = cfg or ModelConfig()
        if cfg.arch != "resnet18":
            raise ValueError(f"unsupported arch {cfg.arch!r}; only resnet18")
        trunk = resnet18(weights=None)
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.projection = nn.Sequential(
            nn.Linear(cfg.feature_dim, cfg.projection_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.projection_hidden, cfg.projection_dim),
        )
        self.classifier = nn.Linear(cfg.feature_dim, num_classes)
        self.num_classes = num_classes
        self.color_constancy = bool(cfg.color_constancy)
        # Not saved with the weights (persistent=False): they follow from the JSON's mean/std.
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if cfg.init_checkpoint:
            load_torchvision_trunk(self, cfg.init_checkpoint)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's last block's output (B, 512, H/32, W/32), before pooling, of normalised input
        (colour-corrected first when configured)."""
        if self.color_constancy:
            x = self.constant_colour(x)
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Global average pooling of a feature map: the 512-d features the heads read."""
        return torch.flatten(self.trunk.avgpool(feature_map), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's 512-d pooled features of normalised input (colour-corrected first when configured)."""
        return self.pool(self.feature_map(x))

    def constant_colour(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input with Shades-of-Grey colour constancy applied to the pixels it stands for."""
        mean, std = self.input_mean.to(x.dtype), self.input_std.to(x.dtype)
        return (shades_of_gray(x * std + mean) - mean) / std

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """SimCLR projection of trunk features (what NT-Xent compares)."""
        return self.projection(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @property
    def cam_layer(self) -> nn.Module:
        """The trunk's last block: Grad-CAM's default target layer."""
        return self.trunk.layer4[-1]

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Grad-CAM's target layers (one here; an ensemble has one per member)."""
        return [self.cam_layer]


class LesionMaskHead(nn.Module):
    """Training-only auxiliary head: a 1×1 convolution giving, for each cell of the trunk's last feature map,
    the logit of "this cell is lesion". Learning it asks the last block to keep where the lesion is (the
    HAM10000 masks' supervision); it is not part of the served model."""

    def __init__(self, feature_dim: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(feature_dim, 1, kernel_size=1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.conv(feature_map)


def load_torchvision_trunk(model: SimCLRResNet18, path: str | Path) -> None:
    """Initialise the trunk from a local torchvision-format resnet18 checkpoint (.safetensors, or a
    .pth read with weights_only=True so no pickled code runs); its fc layer is ignored."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.trunk.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("fc.")]:
        raise ValueError(
            f"{path}: not a torchvision resnet18 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
