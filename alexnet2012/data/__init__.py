"""Data: ILSVRC layout, preprocessing into a cache, statistics, augmentation, loaders (P §2, §4)."""

from alexnet2012.data.augment import (
    Lighting,
    augment,
    centre_view,
    crop_flip,
    mean_crop,
    ten_views,
    to_input,
)
from alexnet2012.data.cache import CacheInfo, cache_info
from alexnet2012.data.imagenet import ImageNet
from alexnet2012.data.prepare import prepare_cache
from alexnet2012.data.stats import Stats, load_stats
from alexnet2012.data.stream import Batches, EvalStreams, TrainStream, eval_loader, train_loader
from alexnet2012.data.synthetic import make_synthetic_imagenet
from alexnet2012.data.worker import EpochPlan, make_plan

__all__ = [
    "Batches",
    "CacheInfo",
    "EpochPlan",
    "EvalStreams",
    "ImageNet",
    "Lighting",
    "Stats",
    "TrainStream",
    "augment",
    "cache_info",
    "centre_view",
    "crop_flip",
    "eval_loader",
    "load_stats",
    "make_plan",
    "make_synthetic_imagenet",
    "mean_crop",
    "prepare_cache",
    "ten_views",
    "to_input",
    "train_loader",
]
