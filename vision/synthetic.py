"""Tiny generated image datasets for tests, demos and benchmarks (no downloads).

Each class has its own mean colour and a class-specific stripe; every image adds
seeded noise, so a small network can learn the classes in a few epochs but not
instantly.
"""

import os
from typing import Sequence, Union

import torch
from PIL import Image


def make_image_folder(
    root: str,
    num_classes: int = 4,
    per_class: Union[Sequence[int], int] = 24,
    splits: Sequence[str] = ("train", "test"),
    test_per_class: int = 8,
    size: int = 16,
    seed: int = 0,
    noise: float = 60.0,
    ext: str = "png",
) -> str:
    """Write ``root/<split>/class_<c>/<i>.<ext>`` and return ``root``."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(num_classes, 3, generator=g) * 160 + 48
    counts = [per_class] * num_classes if isinstance(per_class, int) else list(per_class)
    for split in splits:
        for c in range(num_classes):
            d = os.path.join(root, split, f"class_{c}")
            os.makedirs(d, exist_ok=True)
            n = counts[c] if split == "train" else test_per_class
            for i in range(n):
                img = base[c].view(3, 1, 1).expand(3, size, size).clone()
                row = (c * size) // num_classes
                img[:, row : row + max(1, size // num_classes), :] += 40
                img += torch.randn(3, size, size, generator=g) * noise
                arr = img.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(arr).save(os.path.join(d, f"{i:04d}.{ext}"))
    return root
