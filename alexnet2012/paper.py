"""The paper's numbers, each beside its source. [P]: Krizhevsky, Sutskever and Hinton, "ImageNet
Classification with Deep Convolutional Neural Networks", NIPS 2012 (§: its sections). [C]: the 2012
code (cuda-convnet, published by the Computer History Museum as AlexNet-Source-Code), whose
layers/layers-145.cfg and layer-params-145.cfg are the net of P Table 2's 1-CNN row. Where [P] is
silent or ambiguous, [C] decides (README: "What faithful means"). ``LAYERS``: the net as data."""

from __future__ import annotations

from dataclasses import dataclass, replace

INIT_STD = 0.01  # P §5


@dataclass(frozen=True)
class Layer:
    """``width``: over both columns; ``sees``: "image", "own" column or "both" (the columns cross);
    ``split=False``: not split (fc8); ``halved_in_one_column``: in P §3.2's one-column net. After
    the layer, in this order: ReLU, LRN, ``map_norm``, pool, dropout; ``relu_after_pool`` moves
    the ReLU last ([C]'s pool layers with neuron=relu); ``lrn_columns="both"``: the ReLU, LRN and
    pool run on both columns' maps side by side (Caffe's LRN, whose window crosses the columns),
    each column keeping its own channels."""

    name: str
    kind: str
    width: int
    sees: str
    kernel: int = 0
    stride: int = 1
    pad: int = 0
    bias_init: float = 0.0
    relu: bool = True
    lrn: bool = False
    pool: bool = False
    dropout: bool = False
    split: bool = True
    halved_in_one_column: bool = False
    init_std: float = INIT_STD
    relu_after_pool: bool = False
    map_norm: bool = False
    lrn_k: float = 2.0  # LRN_K, P §3.3 (Caffe: 1)
    lrn_columns: str = "own"  # the LRN's window within its "own" column or across "both"


# P §3.5, Figure 2; bias constants P §5.
LAYERS: tuple[Layer, ...] = (
    Layer(
        "conv1",
        "conv",
        96,
        "image",
        kernel=11,
        stride=4,
        lrn=True,
        pool=True,
        halved_in_one_column=True,
    ),
    Layer(
        "conv2",
        "conv",
        256,
        "own",
        kernel=5,
        pad=2,
        bias_init=1.0,
        lrn=True,
        pool=True,
        halved_in_one_column=True,
    ),
    Layer("conv3", "conv", 384, "both", kernel=3, pad=1, halved_in_one_column=True),
    Layer("conv4", "conv", 384, "own", kernel=3, pad=1, bias_init=1.0, halved_in_one_column=True),
    Layer("conv5", "conv", 256, "own", kernel=3, pad=1, bias_init=1.0, pool=True),
    Layer("fc6", "fc", 4096, "both", bias_init=1.0, dropout=True),
    Layer("fc7", "fc", 4096, "both", bias_init=1.0, dropout=True),
    Layer("fc8", "fc", 1000, "both", relu=False, split=False),
)

COLUMNS = 2
NUM_CLASSES = 1000
IMAGE_SIZE = 256  # P §2
INPUT_SIZES = (224, 227)  # 224: [C]'s overhanging conv1; 227: Caffe's, no padding
POOLED_SIZE = 6  # conv5's pooled maps, 6x6

# LRN, P §3.3; alpha is divided by size, as [C]'s layer.py (scale /= size) and torch do.
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
LRN_K = 2.0

POOL_KERNEL, POOL_STRIDE = 3, 2  # overlapping pooling, P §3.4 (z=3, s=2)
POOL_ABLATION = 2  # z = s = 2 (P §3.4's comparison)
DROPOUT_P = 0.5  # P §4.2

# P §5
BATCH_SIZE = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LEARNING_RATE = 0.01
LR_FACTOR = 10.0
LR_DROPS = 3
EPOCHS = 90
DROP_EPOCHS_2012 = (25, 51, 79)  # [C]'s run: 0.01 -> 1e-3 -> 1e-4 -> 1e-5

# P §4.1
CROP_SIZE = 224
LIGHTING_STD = 0.1
TRAIN_IMAGES_2012 = 1_281_167  # ILSVRC-2012's train set (P §2: about 1.2 million)

PARAMETERS = 60_965_224  # 1000 classes
# Neurons per layer as printed in P §3.5; conv1's is a slip (55x55x96 = 290,400).
PAPER_NEURONS = (253_440, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000)
PAPER_NEURONS_TOTAL_QUOTED = 650_000  # the abstract, as the next
PAPER_PARAMETERS_QUOTED = 60_000_000
# (side, channels), P Figure 2
FEATURE_MAPS = {
    "conv1": (55, 96),
    "pool1": (27, 96),
    "conv2": (27, 256),
    "pool2": (13, 256),
    "conv3": (13, 384),
    "conv4": (13, 384),
    "conv5": (13, 256),
    "pool5": (6, 256),
}


# [C]'s within-map norm (cnorm2, type=rnorm): clipped window, scale / size^2, k = 1 (no minDiv).
MAP_NORM_SIZE = 5
MAP_NORM_SCALE = 1e-3
MAP_NORM_BETA = 0.75
MAP_NORM_K = 1.0


def _changed(layers: tuple[Layer, ...], changes: dict[str, dict]) -> tuple[Layer, ...]:
    return tuple(replace(layer, **changes.get(layer.name, {})) for layer in layers)


# [C]'s layers-145.cfg: the paper's shapes, with its own init, norms and ReLU placement.
LAYERS_2012_CODE = _changed(
    LAYERS,
    {
        "conv1": {"relu_after_pool": True},  # rnorm1 sees pre-ReLU values; pool1 neuron=relu
        "conv2": {"map_norm": True},  # relu, rnorm2, cnorm2, pool2
        "conv3": {"init_std": 0.03},
        "conv4": {"init_std": 0.03},
        "conv5": {"init_std": 0.03, "relu_after_pool": True},  # pool3 neuron=relu
    },
)


# [Caffe]: BVLC's models/bvlc_alexnet (train_val.prototxt, solver.prototxt, readme.md): the paper's
# shapes with conv1 ungrouped (its 96 kernels see only the image, so they split into the columns
# as they are), LRN with k = 1 across all channels of both columns before pool1 and pool2, 227
# inputs, weights N(0, 0.01) but N(0, 0.005) in fc6/fc7, biases 0.1 where the paper has 1. Its
# dropout is inverted (x2 while training, nothing at test); here it is the paper's, which is the
# same network with fc7's and fc8's weights doubled (the importer does that).
_CAFFE_LRN = {"lrn_k": 1.0, "lrn_columns": "both"}
LAYERS_CAFFE = _changed(
    LAYERS,
    {
        "conv1": _CAFFE_LRN,
        "conv2": {**_CAFFE_LRN, "bias_init": 0.1},
        "conv4": {"bias_init": 0.1},
        "conv5": {"bias_init": 0.1},
        "fc6": {"bias_init": 0.1, "init_std": 0.005},
        "fc7": {"bias_init": 0.1, "init_std": 0.005},
    },
)
CAFFE_INPUT_SIZE = 227
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)  # Caffe's per-channel ImageNet mean, 0..255, B G R
CAFFE_BATCH, CAFFE_STEP, CAFFE_ITERATIONS = 256, 100_000, 450_000  # lr /10 every step


@dataclass(frozen=True)
class Event:
    """From ``epoch`` on, the weights of ``layers`` (all when empty) learn at ``lr``;
    ``colour_noise``: the lighting noise on or off from then (None: unchanged)."""

    epoch: int
    lr: float | None = None
    layers: tuple[str, ...] = ()
    colour_noise: bool | None = None


@dataclass(frozen=True)
class Recipe:
    """A layer table and how it learns. Biases start at ``bias_lr_scale`` x the weights' rate and
    keep that ratio ("follows") or that rate until their weights freeze ("fixed")."""

    name: str
    layers: tuple[Layer, ...]
    bias_lr_scale: float = 1.0
    bias_lr: str = "follows"
    events: tuple[Event, ...] = ()
    epochs: int = EPOCHS
    crop_chunk: int = 1  # images cropped and flipped alike ([C]'s convdata.py: 32)
    lighting: str = "paper"  # the default --lighting ([C]'s colour noise: "2012")
    input_size: int = CROP_SIZE  # the crops its weights were trained on (Caffe: 227)


BIAS_LR_READINGS = ("fixed", "follows")
# 2012-code: layers-145's logged run. Its params file, edited at each event, ends with epsB 0.02
# beside epsW 1e-5 (conv1: 0.0): biases keep 0.02, 0 once frozen ("fixed"); "follows": 2x epsW.
RECIPES: dict[str, Recipe] = {
    "paper": Recipe("paper", LAYERS),  # no events: lr/10 on plateau (PaperSchedule)
    "2012-code": Recipe(
        "2012-code",
        LAYERS_2012_CODE,
        bias_lr_scale=2.0,
        bias_lr="fixed",
        events=(
            Event(25, 1e-3),
            Event(51, 1e-4),
            Event(67, 1e-5, ("conv1",), colour_noise=False),
            Event(72, 0.0, ("conv1",)),
            Event(79, 1e-5, ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")),
        ),
        epochs=91,  # killed at 91
        crop_chunk=32,
        lighting="2012",
    ),
    # Caffe's solver by epochs: a step of 100,000 batches of 256 is 20.0 epochs of ILSVRC-2012
    # train, 450,000 iterations 89.9; biases at 2x the weights' rate; no lighting noise.
    "caffe": Recipe(
        "caffe",
        LAYERS_CAFFE,
        bias_lr_scale=2.0,
        events=(Event(20, 1e-3), Event(40, 1e-4), Event(60, 1e-5), Event(80, 1e-6)),
        epochs=90,
        lighting="none",
        input_size=CAFFE_INPUT_SIZE,
    ),
}


def recipe(name: str, bias_lr: str | None = None) -> Recipe:
    """``RECIPES[name]``, with the other ``bias_lr`` reading when given."""
    assert bias_lr in (None, *BIAS_LR_READINGS), bias_lr
    return RECIPES[name] if bias_lr is None else replace(RECIPES[name], bias_lr=bias_lr)


@dataclass(frozen=True)
class Result:
    """Error rates (%) reported for the paper's net or a well-known reproduction."""

    source: str
    dataset: str
    top1: float
    top5: float | None
    note: str = ""


RESULTS: tuple[Result, ...] = (
    Result("P Table 1", "ILSVRC-2010 test", 37.5, 17.0, "1 CNN"),
    Result("P Table 2", "ILSVRC-2012 val", 40.7, 18.2, "1 CNN"),
    Result(
        "[C] log, layers-145",
        "ILSVRC-2012 val",
        40.66,
        18.21,
        "epoch 91; views not logged, the code's default test is the centre crop",
    ),
    Result("[C] log, layers-145", "ILSVRC-2012 val", 40.25, 17.99, "135 epochs, 10-view"),
    Result("Caffe bvlc_alexnet", "ILSVRC-2012 val", 42.9, 19.8, "centre crop"),
    Result(
        "torchvision alexnet", "ILSVRC-2012 val", 43.48, 20.93, "one-column variant, centre crop"
    ),
)

# P Table 2's average of five CNNs (beside an ensemble's result, not a single run's)
ENSEMBLE_RESULT = Result("P Table 2", "ILSVRC-2012 val", 38.1, 16.4, "5 CNNs")

MIDDLE_CONVS = ("conv3", "conv4")  # P §7's middle layers that go without a pool or norm


def without(layers: tuple[Layer, ...], name: str) -> tuple[Layer, ...]:
    """``layers`` less the middle conv layer ``name`` (P §7); the next layer takes its input,
    crossing the columns where it crossed them."""
    assert name in MIDDLE_CONVS, name
    i = [layer.name for layer in layers].index(name)
    after = replace(layers[i + 1], sees="both") if layers[i].sees == "both" else layers[i + 1]
    return layers[:i] + (after,) + layers[i + 2 :]


@dataclass(frozen=True)
class Ablation:
    """One of the paper's comparisons: a run with the ``TrainConfig`` field ``setting`` at a
    value in ``off`` lacks ``feature``; ``top1``/``top5``: how many points higher the paper's
    error was without it (None: not given), ``note``: the paper's own words where it gives no
    figure or only a bound."""

    name: str
    feature: str
    setting: str
    off: tuple
    top1: float | None
    top5: float | None
    note: str = ""


ABLATIONS: tuple[Ablation, ...] = (
    Ablation(
        "one-column", "two columns (P §3.2)", "columns", (1,), 1.7, 1.2,
        "against one column with half the kernels in each conv layer",
    ),
    Ablation("no-lrn", "local response normalization (P §3.3)", "lrn", (False,), 1.4, 1.2),
    Ablation(
        "no-overlap", "overlapping pooling (P §3.4)", "overlapping_pool", (False,), 0.4, 0.3
    ),
    Ablation(
        "no-lighting", "PCA lighting noise (P §4.1)", "lighting", ("none",), 1.0, None,
        "over 1% top-1",
    ),
    Ablation(
        "no-dropout", "dropout (P §4.2)", "dropout", (False,), None, None,
        "no figure: without dropout the net 'exhibits substantial overfitting'",
    ),
    Ablation(
        "no-middle-conv", "a middle conv layer (P §7)", "remove_conv", MIDDLE_CONVS, 2.0, None,
        "about 2% top-1 for any middle layer",
    ),
)  # fmt: skip


def ablation(name: str) -> Ablation:
    return next(a for a in ABLATIONS if a.name == name)


def result_for(dataset: str) -> Result:
    """The paper's own 1-CNN result on ``dataset``."""
    for r in RESULTS:
        if r.source.startswith("P ") and r.dataset == dataset:
            return r
    raise KeyError(dataset)
