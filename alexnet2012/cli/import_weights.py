"""Import a trained AlexNet (BVLC's bvlc_alexnet.caffemodel, or the ONNX model zoo's
bvlcalexnet .onnx) into a checkpoint that evaluate.py, figures.py, classify.py, summary.py and
alexnet2012.load_trained_model take like a run's."""

import argparse
import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from alexnet2012 import paper
from alexnet2012.checkpoint import save_checkpoint
from alexnet2012.config import TrainConfig
from alexnet2012.errors import UsageError
from alexnet2012.importer import grouped_weights, identify, read_ops
from alexnet2012.interchange import load_grouped_state_dict
from alexnet2012.model import AlexNet


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("file", help="bvlc_alexnet.caffemodel or bvlcalexnet-*.onnx")
    p.add_argument("out", help="the checkpoint to write, e.g. bvlc_alexnet.pt")
    p.add_argument(
        "--classes",
        required=True,
        help="the class names in the network's order: Caffe's synset_words.txt (one "
        "'WNID name, name' a line, from data/ilsvrc12/get_ilsvrc_aux.sh) or a prepared cache",
    )
    p.add_argument(
        "--mean-file",
        help="Caffe's imagenet_mean.binaryproto, BGR, 0..255, 256x256 (default: none, --mean)",
    )
    p.add_argument(
        "--mean",
        default=",".join(f"{v:g}" for v in paper.CAFFE_MEAN_BGR),
        help="without --mean-file: the per-channel mean B,G,R on 0..255 (default: Caffe's "
        "%(default)s)",
    )
    p.add_argument(
        "--channels",
        choices=("bgr", "rgb"),
        default="bgr",
        help="the file's input channel order (default: bgr, Caffe's and the ONNX zoo's)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    path, out = Path(args.file), Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: folder {out.parent} does not exist (create it first)")
    wnids, names = read_classes(Path(args.classes))
    mean = mean_image(args.mean_file, args.mean)  # before the slow part: its errors first
    print(f"reading {path} ...", flush=True)
    ops, kind = read_ops(path)
    recipe = identify(ops)
    weights = grouped_weights(ops, recipe, bgr=args.channels == "bgr")
    num_classes = weights["fc8.weight"].shape[0]
    if num_classes != len(wnids):
        raise UsageError(
            f"{path} has {num_classes} outputs, {args.classes} names {len(wnids)} classes: "
            "give the class list the network was trained with"
        )
    recipe_info = paper.RECIPES[recipe]
    model = AlexNet(num_classes, input_size=recipe_info.input_size, recipe=recipe)
    try:
        load_grouped_state_dict(model, weights)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"{path}: the weights do not fit AlexNet ({exc})") from None
    config = TrainConfig(
        cache="",
        out=str(out.parent),
        input_size=recipe_info.input_size,
        recipe=recipe,
        lighting=recipe_info.lighting,
        epochs=recipe_info.epochs,
        deviations=[f"imported from {path.name} ({kind}), not trained here"],
    )
    save_checkpoint(
        out,
        {
            "model": model.state_dict(),
            "config": asdict(config),
            "num_classes": num_classes,
            "wnids": wnids,
            "class_names": [list(n) for n in names],
            "mean_image": torch.from_numpy(mean),
            "imported": {
                "file": path.name,
                "format": kind,
                "sha1": sha1(path),
                "channels": args.channels,
                "mean": args.mean_file or f"per-channel B,G,R {args.mean}",
            },
            "finished": True,
        },
    )
    print(
        f"wrote {out}: recipe {recipe} (Caffe's layer table), {num_classes} classes, input "
        f"{recipe_info.input_size}x{recipe_info.input_size} RGB"
    )


def read_classes(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """WordNet ids and names, from synset_words.txt or a prepared cache's index."""
    if path.is_dir():
        from alexnet2012.data import cache_info

        info = cache_info(path)
        return list(info.wnids), [tuple(n) for n in info.class_names]
    if not path.is_file():
        raise UsageError(f"--classes {path} does not exist: give synset_words.txt or a cache")
    wnids, names = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, words = line.strip().partition(" ")
        if not (wnid.startswith("n") and wnid[1:].isdigit()):
            raise UsageError(
                f"--classes {path} line {number} does not start with a WordNet id (n0...): "
                "give Caffe's synset_words.txt"
            )
        wnids.append(wnid)
        names.append(tuple(w.strip() for w in words.split(",") if w.strip()))
    return wnids, names


def mean_image(mean_file: str | None, mean: str) -> np.ndarray:
    """The (3, 256, 256) RGB mean on [0,1], from Caffe's BGR file or B,G,R values on 0..255."""
    if mean_file is not None:
        from alexnet2012.caffe_format import read_mean

        bgr = read_mean(Path(mean_file))
        side = (paper.IMAGE_SIZE, paper.IMAGE_SIZE)
        if bgr.shape[1:] != side:
            raise UsageError(
                f"--mean-file {mean_file} is {bgr.shape[1]}x{bgr.shape[2]}, the images here "
                f"{side[0]}x{side[1]}: give imagenet_mean.binaryproto or --mean B,G,R"
            )
        return np.ascontiguousarray(bgr[::-1] / 255.0, dtype=np.float32)
    try:
        values = [float(v) for v in mean.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise UsageError(f"--mean {mean}: give three values B,G,R on 0..255, e.g. 104,117,123")
    rgb = np.array(values[::-1], np.float32) / 255.0
    return np.ascontiguousarray(
        np.broadcast_to(rgb[:, None, None], (3, paper.IMAGE_SIZE, paper.IMAGE_SIZE))
    )


def sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
