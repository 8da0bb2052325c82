"""A small CNN trained from scratch (no pretrained weights): the classic cats-vs-dogs recipe."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Three conv blocks, dropout, a dense head: the classic cats-vs-dogs recipe."""

    def __init__(self, n_out: int, width: int = 32, p: float = 0.5):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)
            )

        self.body = nn.Sequential(block(3, width), block(width, width * 2), block(width * 2, width * 4))
        # Adaptive pooling (not Flatten) keeps the head independent of the image size.
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(width * 4, 128), nn.ReLU(inplace=True),
            nn.Dropout(p), nn.Linear(128, n_out),
        )

    def forward(self, x):
        return self.head(self.body(x))
