"""What lskd-vision-train and lskd-vision-cache share: the device, the data options and the datasets.

``prepare_data`` resolves the data options into datasets exactly the same way for
both tools, so a cache holds the teacher's output on the views a student sees.
"""

import argparse

import torch

from . import data as D
from . import option_table
from .options import UsageError


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The dataset and augmentation options, shared with lskd-vision-cache (same names, same
    defaults): declared in ``option_table``."""
    option_table.add_options(p, "cache", groups=[option_table.DATASET])


def device_from_spec(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev


_device = device_from_spec  # the old private name


# ------------------------------------------------------------------ data
def prepare_data(args, rank: int, world: int):
    splits = D.find_splits(args.data, cache_dir=args.cache_dir, test_split=args.test_split)
    train, test = splits.train, splits.test
    val = None
    if args.val_fraction > 0:
        train, val = D.carve_val(train, args.val_fraction, args.split_seed)
    if args.train_per_class > 0:
        train = D.per_class_subset(train, args.train_per_class, args.split_seed)
    if args.imbalance_factor > 1.0:
        train = D.long_tail(train, args.imbalance_factor, args.split_seed)
    counts = train.counts()
    n_total = len(train) + (len(val) if val else 0) + (len(test) if test else 0)
    w, h = D.image_size(train.samples[0][0])
    cache = args.cache_images == "yes" or (args.cache_images == "auto" and max(w, h) <= 64 and n_total <= 200_000)
    # decoding into the RAM cache reads every image anyway, with the same clear error
    if not cache and (args.verify_images == "all" or (args.verify_images == "auto" and n_total <= 100_000)):
        for s in (train, val, test):
            if s is not None:
                D.verify_images(s)
    style = args.input_style
    if style == "auto":
        style = "cifar" if max(w, h) <= 64 else "imagenet"
    if args.img_size <= 0:
        args.img_size = max(w, h) if style == "cifar" else 224
    args.input_style = style
    tr_tf, ev_tf = D.build_transforms(style, args.img_size, augment=args.augment, seed=args.seed)
    ds = {"train": D.ImageDataset(train, tr_tf, cache=cache)}
    if val is not None:
        ds["val"] = D.ImageDataset(val, ev_tf, cache=cache)
    if test is not None:
        ds["test"] = D.ImageDataset(test, ev_tf, cache=cache)
    info = {
        "layout": splits.layout,
        "root": splits.root,
        "classes": train.classes,
        "num_classes": len(train.classes),
        "train_counts": counts,
        "sizes": {k: len(v) for k, v in ds.items()},
        "cached_in_ram": cache,
        "notes": splits.notes,
    }
    return ds, info


__all__ = ["add_data_args", "device_from_spec", "prepare_data"]
