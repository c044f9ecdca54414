"""The five most probable classes of images, from a checkpoint alone (a run's, or one
scripts/import_weights.py wrote): each image rescaled as the caches are (shorter side 256,
centre 256x256), its centre crop minus the checkpoint's mean crop."""

import argparse
from collections.abc import Sequence

import torch

from alexnet2012 import devices, options
from alexnet2012.data.augment import centre_view, mean_crop, to_input
from alexnet2012.data.prepare import BadImage, load_256
from alexnet2012.errors import UsageError
from alexnet2012.resume import load_trained


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint", help="a run folder, its checkpoint.pt, or an imported checkpoint")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument(
        "--top", type=int, default=5, help="classes to show per image (default: %(default)s)"
    )
    p.add_argument("--devices", help="cuda:0 | cpu (default: cuda:0 if available, else cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    options.count("--top", args.top)
    names = devices.parse(args.devices)  # without --devices: cuda:0 where there is one, else cpu
    model, _, checkpoint = load_trained(args.checkpoint, tuple(str(n) for n in names))
    labels = class_labels(checkpoint)
    mean = checkpoint.get("mean_image")
    if mean is None:
        raise UsageError(
            f"{args.checkpoint} holds no mean image (written before checkpoints carried one): "
            "classify with a newer checkpoint of the run, or evaluate.py on its cache"
        )
    size = model.input_size
    mean = mean_crop(mean.float().numpy(), size)
    device = next(model.parameters()).device
    for path in args.images:
        try:
            image = load_256(path)
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist") from None
        except BadImage as exc:
            raise UsageError(f"{path} is not an image Pillow can read ({exc})") from None
        x = to_input(centre_view(torch.from_numpy(image)[None], size), mean).to(device)
        with torch.no_grad():
            probs = model(x).softmax(dim=1)[0].double().cpu()
        top = probs.topk(min(args.top, len(probs)))
        print(f"{path}:")
        for p_k, k in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {100 * p_k:6.2f}%  {labels[k]}")


def class_labels(checkpoint: dict) -> list[str]:
    """Each class's names and WordNet id, or its number when the checkpoint has neither."""
    wnids = checkpoint.get("wnids") or [None] * checkpoint["num_classes"]
    names = checkpoint.get("class_names") or [[]] * len(wnids)
    out = []
    for k, (wnid, words) in enumerate(zip(wnids, names)):
        text = ", ".join(words) if words else f"class {k}"
        out.append(f"{text} ({wnid})" if wnid else text)
    return out
