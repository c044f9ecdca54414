"""A run's configuration: its settings (the paper's by default), checks and deviations from it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from alexnet2012 import devices, options, paper
from alexnet2012.data import CacheInfo
from alexnet2012.data.augment import LIGHTING_MODES
from alexnet2012.data.packed import JPEG
from alexnet2012.data.subset import Subset
from alexnet2012.errors import UsageError
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD, layer_groups
from alexnet2012.schedule import PaperSchedule, RecipeSchedule, describe_event

# settings --resume may change, or that follow from the data: two runs differing only in these
# compute the same thing
NOT_COMPUTATION = tuple(
    "out cache devices workers epochs checkpoint_minutes dataset test_split deviations replicas "
    "devices_per_replica".split()
)


@dataclass
class TrainConfig:
    """Everything that defines a run."""

    cache: str
    out: str
    devices: tuple[str, ...] = ("cpu",)
    input_size: int = paper.CROP_SIZE
    batch_size: int = paper.BATCH_SIZE
    accumulate: int = 1  # chunks per batch: the same gradient in less memory
    eval_batch_size: int = paper.BATCH_SIZE
    epochs: int = paper.EPOCHS
    seed: int = 0
    workers: int = 4
    columns: int = paper.COLUMNS
    lrn: bool = True
    overlapping_pool: bool = True
    dropout: bool = True
    remove_conv: str | None = None  # P §7's ablation: a paper.MIDDLE_CONVS layer removed
    lighting: str = "paper"
    tf32: bool = True  # CUDA only; False: fp32 products as in 2012
    bf16: bool = False  # bf16 autocast, the LRN in float32
    compile: bool = False  # torch.compile the training step
    recipe: str = "paper"  # or "2012-code": [C]'s layers-145 network and schedule
    bias_lr: str | None = None  # 2012-code: its bias-rate reading (None: paper.RECIPES')
    lr: float = paper.LEARNING_RATE
    lr_drops: tuple[int, ...] | None = None  # fixed drop epochs instead of the plateau rule
    patience: int = 5
    threshold: float = 0.001
    ten_view: bool = True
    checkpoint_minutes: float = 30.0
    dataset: str = "ILSVRC-2012 val"
    test_split: str = "val"  # "test" for ILSVRC-2010 (P Table 1)
    deviations: list[str] = field(default_factory=list)  # extra notes, e.g. from the demo
    replicas: int = 1  # torchrun's processes, each a share of every batch (distributed.py)
    devices_per_replica: int = 1  # under torchrun with CUDA: one GPU, or a column pair

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The settings recorded in config.json or a checkpoint."""
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in d.items() if k in known})
        config.tf32 = d.get("tf32", False)  # recorded before the setting existed: fp32
        config.devices = tuple(config.devices)
        config.lr_drops = None if config.lr_drops is None else tuple(config.lr_drops)
        return config

    def check(self, data: CacheInfo | None = None) -> None:
        """Refuse settings that cannot run, one line each; against the ``data`` when given."""
        if data is not None and data.num_classes < 2:
            raise UsageError(
                f"{self.cache} holds {data.num_classes} class: classifying needs "
                "at least 2 (give data with more classes)"
            )
        if data is not None and data.val_images == 0:
            raise UsageError(
                f"{self.cache} has no prepared validation images: prepare the val "
                "split (scripts/prepare_imagenet.py) before training"
            )
        train_images = None if data is None else data.train_images
        if not self.devices:
            raise UsageError("--devices takes one or two devices (one per column), got 0")
        devices.parse(self.devices, self.columns)
        options.input_size(self.input_size)
        options.count("--batch-size", self.batch_size)
        options.count("--accumulate", self.accumulate)
        options.count("eval_batch_size", self.eval_batch_size)
        if self.devices_per_replica not in (1, 2):
            raise UsageError(
                f"--devices-per-replica must be 1 or 2, got {self.devices_per_replica}"
            )
        options.count("replicas", self.replicas)
        if self.batch_size % self.replicas:
            raise UsageError(
                f"--batch-size {self.batch_size} is not divisible by the {self.replicas} "
                "replicas: the batch is split evenly across them"
            )
        if self.replicas > 1 and self.batch_size // self.replicas % self.accumulate:
            raise UsageError(
                f"--batch-size {self.batch_size} over {self.replicas} replicas is "
                f"{self.batch_size // self.replicas} images each, not divisible by --accumulate "
                f"{self.accumulate}: each chunk must hold the same number of images"
            )
        if self.batch_size % self.accumulate:
            raise UsageError(
                f"--batch-size {self.batch_size} is not divisible by --accumulate "
                f"{self.accumulate}: each chunk must hold the same number of images"
            )
        if train_images is not None and self.batch_size > train_images:
            raise UsageError(
                f"--batch-size {self.batch_size} is larger than the training set "
                f"({train_images} images): no full batch to train on"
            )
        options.count("--epochs", self.epochs)
        options.seed(self.seed)
        options.workers(self.workers)
        options.columns(self.columns)
        options.remove_conv(self.remove_conv)
        if self.lighting not in LIGHTING_MODES:
            raise UsageError(
                f"--lighting must be one of {', '.join(LIGHTING_MODES)}, got {self.lighting}"
            )
        options.recipe(self.recipe)
        if self.bias_lr is not None and (
            self.recipe == "paper" or self.bias_lr not in paper.BIAS_LR_READINGS
        ):
            raise UsageError(
                f"--bias-lr {self.bias_lr}: only with --recipe 2012-code, one of "
                f"{', '.join(paper.BIAS_LR_READINGS)}"
            )
        if self.recipe != "paper" and self.lr_drops is not None:
            raise UsageError(f"--lr-drops: --recipe {self.recipe} has its own fixed schedule")
        options.positive("--lr", self.lr)
        options.lr_drops(self.lr_drops, self.epochs)
        options.count("--patience", self.patience)
        options.at_least_zero("--threshold", self.threshold)
        options.at_least_zero(
            "--checkpoint-minutes", self.checkpoint_minutes, "a checkpoint after every batch"
        )

    def same_computation(self, recorded: Any) -> bool:
        """Whether settings recorded in a run's config.json compute what these do."""
        try:
            old = asdict(TrainConfig.from_dict(recorded))
        except (TypeError, ValueError, AttributeError):
            return False
        new = asdict(self)
        return all(old[k] == new[k] for k in new if k not in NOT_COMPUTATION)


def default_workers(names: Sequence[str | torch.device]) -> int:
    """Loader processes: none on the CPU (they would take the training threads' cores), else 8."""
    return min(8, os.cpu_count() or 1) if devices.any_cuda(names) else 0


def deviations(config: TrainConfig, num_classes: int, cache: CacheInfo | None = None) -> list[str]:
    """How a run differs from the paper's, in words for the report (``cache``: its data)."""
    out = list(config.deviations)
    if cache is not None and cache.subset is not None:
        subset = Subset.from_dict(cache.subset)
        task = "not the paper's 1000-class task"
        out.append(f"a subset of ImageNet, {subset.name} (--subset {subset.text}): {task}")
    if cache is not None and cache.format == JPEG:
        out.append(
            f"the cache re-encodes the 256x256 images as JPEG (quality {cache.quality}): "
            "the network sees JPEG error the paper's raw crops did not have"
        )
    if num_classes != paper.NUM_CLASSES:
        out.append(
            f"{num_classes} classes instead of {paper.NUM_CLASSES}: chance is "
            f"{100 * (1 - 1 / num_classes):.1f}% top-1 error"
        )
    if config.batch_size != paper.BATCH_SIZE:
        out.append(f"batch {config.batch_size} instead of {paper.BATCH_SIZE}")
    recipe = paper.recipe(config.recipe, config.bias_lr)
    events = "; ".join(map(describe_event, recipe.events))
    if recipe.name == "caffe":
        out.append(
            "Caffe's bvlc_alexnet recipe: conv1 ungrouped, LRN with k=1 across both columns' "
            "maps, biases 0.1 and N(0, 0.005) in fc6/fc7, biases at 2x the weights' rate, lr / 10 "
            f"every 20 epochs ({events})"
        )
    elif recipe.events:
        fixed = "keep their rate until their layer freezes"
        how = fixed if recipe.bias_lr == "fixed" else "follow the weights' rate down"
        out.append(
            f"the 2012 code's recipe (layers-145): LRN before ReLU in conv1, a within-map "
            f"normalization after conv2, its init, biases at {recipe.bias_lr_scale:g}x the "
            f"weights' rate (reading '{recipe.bias_lr}': biases {how}), and its fixed events by "
            f"epoch ({events}) instead of the paper's"
        )
    if config.epochs != recipe.epochs:
        about = "about " if recipe.name == "paper" else ""
        out.append(
            f"at most {config.epochs} epoch{'' if config.epochs == 1 else 's'} instead "
            f"of {about}{recipe.epochs}"
        )
    if config.lr_drops == ():
        out.append(
            "lr never divided (no fixed drop within the epochs) instead of on validation plateaus"
        )
    elif config.lr_drops is not None:
        which = " (the 2012 code's run)" if tuple(config.lr_drops) == paper.DROP_EPOCHS_2012 else ""
        out.append(
            f"lr divided by 10 at fixed epochs {list(config.lr_drops)}{which} instead of "
            "on validation plateaus"
        )
    if config.input_size != paper.CROP_SIZE:
        out.append(f"{config.input_size}x{config.input_size} crops (Caffe's) instead of 224x224")
    if config.lighting != "paper":
        out.append(f"lighting noise: {config.lighting} (the paper's formula on [0,1] is 'paper')")
    if config.columns != paper.COLUMNS:
        out.append("one column (the paper's one-GPU comparison net, P §3.2)")
    if not config.lrn:
        out.append("no local response normalization (ablation, P §3.3)")
    if not config.overlapping_pool:
        out.append("non-overlapping 2x2 pooling (ablation, P §3.4)")
    if not config.dropout:
        out.append("no dropout in fc6 and fc7 (ablation, P §4.2)")
    if config.remove_conv is not None:
        out.append(f"{config.remove_conv} removed (ablation, P §7)")
    if config.bf16:
        out.append(
            "bf16 autocast (products with 8-bit mantissas, the LRN in float32) instead of "
            "the fp32 of 2012's GPUs"
        )
    if config.tf32 and devices.any_cuda(config.devices):
        out.append(
            "TF32 products on CUDA (10-bit mantissa inputs) instead of the fp32 of 2012's "
            "GPUs; --no-tf32 computes in fp32"
        )
    return out


def build_model(config: TrainConfig, num_classes: int) -> AlexNet:
    """The network placed as ``config.devices`` says: one device, or one column per device."""
    kwargs = dict(
        input_size=config.input_size,
        columns=config.columns,
        lrn=config.lrn,
        overlapping_pool=config.overlapping_pool,
        dropout=config.dropout,
        remove_conv=config.remove_conv,
        recipe=config.recipe,
    )
    if len(config.devices) == 1:
        return AlexNet(num_classes, **kwargs).to(config.devices[0])
    return AlexNet(num_classes, devices=config.devices, **kwargs)


def build_optimizer(config: TrainConfig, model: AlexNet) -> PaperSGD:
    """PaperSGD; for a recipe with per-layer rates ([C]'s), one param group per layer and kind."""
    if config.recipe == "paper":
        return PaperSGD(model.parameters(), lr=config.lr)
    return PaperSGD(layer_groups(model, config.lr), lr=config.lr)


def build_schedule(config: TrainConfig) -> PaperSchedule | RecipeSchedule:
    """The recipe's fixed events, else the plateau rule or ``config.lr_drops``."""
    recipe = paper.recipe(config.recipe, config.bias_lr)
    if recipe.events:
        return RecipeSchedule(recipe, lr=config.lr, max_epochs=config.epochs)
    return PaperSchedule(
        lr=config.lr,
        patience=config.patience,
        threshold=config.threshold,
        max_epochs=config.epochs,
        drop_epochs=config.lr_drops,
    )
