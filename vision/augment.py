"""Deterministic training views: the crop and flip of sample i in epoch e are a pure
function of (run seed, e, i).

A student's views then do not depend on batch order, data-loader workers, DDP
rank or resuming, and a soft-label cache (``lskd-vision-cache``) can run the
teacher on exactly the images a student with that seed will see.

* CIFAR style: resize to ``img_size``, zero-pad by ``padding`` (default
  ``max(1, img_size // 8)``, 4 at 32 px), crop ``img_size`` at a random offset,
  flip with probability 1/2 (torchvision's ``RandomCrop(padding=...)`` +
  ``RandomHorizontalFlip``).
* ImageNet style: a ``RandomResizedCrop`` box drawn with torchvision's
  ``RandomResizedCrop.get_params`` rule (scale (0.08, 1), ratio (3/4, 4/3), ten
  tries then a central fallback), resized bilinearly with antialias, then the flip.

Each (seed, epoch, index) seeds its own ``torch.Generator`` (through a hash, so
nearby keys give unrelated streams); the box is drawn first, then the flip.
"""

import hashlib
import math
import struct
from typing import Dict, Optional, Sequence, Tuple

import torch

# Bump when the sampling rule changes: caches record it and refuse another rule.
VIEW_RULE = "lskd_vision.augment/1"
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def view_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, index) only."""
    digest = hashlib.blake2b(struct.pack("<qqq", int(seed), int(epoch), int(index)), digest_size=8).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return g


def resized_crop_box(height: int, width: int, g: torch.Generator, scale: Sequence[float] = SCALE,
                     ratio: Sequence[float] = RATIO) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)``: torchvision's ``RandomResizedCrop.get_params`` driven by ``g``."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class SeededViews:
    """Training transform ``(PIL image, index) -> normalised tensor`` for the current epoch.

    ``set_epoch(e)`` selects the epoch (the dataset forwards it; see
    ``lskd_vision.data.ImageDataset.set_epoch``). ``indexed = True`` tells the
    dataset to pass the sample index.
    """

    indexed = True

    def __init__(self, style: str, img_size: int, seed: int, mean: Sequence[float], std: Sequence[float],
                 padding: Optional[int] = None):
        if style not in ("cifar", "imagenet"):
            raise ValueError(f"unknown input style {style!r}; choose cifar or imagenet")
        self.style, self.img_size, self.seed = style, int(img_size), int(seed)
        self.padding = max(1, self.img_size // 8) if padding is None else int(padding)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def describe(self) -> Dict:
        """Everything that fixes the views besides (seed, epoch, index) and the images."""
        d = {"rule": VIEW_RULE, "style": self.style, "img_size": self.img_size, "flip_p": 0.5}
        if self.style == "cifar":
            d["padding"] = self.padding
        else:
            d.update(scale=list(SCALE), ratio=list(RATIO), interpolation="bilinear", antialias=True)
        return d

    def params(self, index: int, width: int, height: int, epoch: Optional[int] = None) -> Tuple:
        """CIFAR: ``(top, left, flip)`` in the padded image; ImageNet: ``(top, left, h, w, flip)``."""
        g = view_generator(self.seed, self.epoch if epoch is None else epoch, index)
        if self.style == "cifar":
            top, left = torch.randint(0, 2 * self.padding + 1, (2,), generator=g).tolist()
            box: Tuple = (top, left)
        else:
            box = resized_crop_box(height, width, g)
        flip = bool(torch.rand(1, generator=g).item() < 0.5)
        return (*box, flip)

    def __call__(self, img, index: int) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        if self.style == "cifar":
            s, p = self.img_size, self.padding
            x = TF.to_tensor(TF.resize(img, [s, s]))
            top, left, flip = self.params(index, s, s)
            padded = x.new_zeros(x.size(0), s + 2 * p, s + 2 * p)
            padded[:, p:p + s, p:p + s] = x
            x = padded[:, top:top + s, left:left + s]
        else:
            width, height = img.size
            top, left, h, w, flip = self.params(index, width, height)
            img = TF.resized_crop(img, top, left, h, w, [self.img_size, self.img_size],
                                  InterpolationMode.BILINEAR, antialias=True)
            x = TF.to_tensor(img)
        if flip:
            x = x.flip(-1)
        return (x - self.mean) / self.std

    def batch(self, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """CIFAR style, batched: the views of ``images[indices]`` (uint8 ``[N, 3, s, s]``, already at
        ``img_size``) as one ``[B, 3, s, s]`` tensor, equal bit for bit to ``self(image_i, i)``.

        The crop box and flip come from ``params`` (the same (seed, epoch, index) rule);
        zero-padding, crop and flip are one gather on uint8 (the padding's 0 is 0.0
        after ``/255``), then ``x / 255``, ``- mean``, ``/ std`` as ``__call__`` does."""
        if self.style != "cifar":
            raise ValueError("SeededViews.batch is the CIFAR-style (pad + crop + flip) view only")
        s, p = self.img_size, self.padding
        if tuple(images.shape[-3:]) != (3, s, s) or images.dtype != torch.uint8:
            raise ValueError(f"SeededViews.batch needs uint8 images of shape [N, 3, {s}, {s}]")
        params = torch.tensor([self.params(int(i), s, s) for i in indices], dtype=torch.long).view(-1, 3)
        top, left, flip = params[:, 0], params[:, 1], params[:, 2].bool()
        n = params.size(0)
        padded = images.new_zeros(n, 3, s + 2 * p, s + 2 * p)
        padded[:, :, p:p + s, p:p + s] = images[torch.as_tensor(indices, dtype=torch.long)]
        ar = torch.arange(s)
        rows = (top[:, None] + ar).view(n, 1, s, 1).expand(n, 3, s, s + 2 * p)
        cols = (left[:, None] + torch.where(flip[:, None], s - 1 - ar, ar)).view(n, 1, 1, s).expand(n, 3, s, s)
        x = padded.gather(2, rows).gather(3, cols)  # crop rows, then columns (reversed where flipped)
        return normalise_uint8(x, self.mean, self.std)


def normalise_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(to_tensor(x) - mean) / std`` of a uint8 batch, with torchvision's op order (float32, /255)."""
    return (x.to(torch.float32).div(255) - mean) / std


__all__ = ["VIEW_RULE", "SeededViews", "normalise_uint8", "resized_crop_box", "view_generator"]
