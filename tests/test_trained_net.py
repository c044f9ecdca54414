"""A trained net used without training: evaluate.py's ensembles (P Table 2), classify.py with
only the checkpoint, export.py's ONNX and torch.export files, figures.py on an imported net;
on a 3-class cache, with an imported BVLC-shaped net (227, Caffe's recipe and mean) beside a
paper net (224, the cache's mean)."""

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet2012 import AlexNet, load_trained_model
from alexnet2012.checkpoint import save_checkpoint
from alexnet2012.cli import classify, export, figures, import_weights
from alexnet2012.cli import evaluate as evaluate_cli
from alexnet2012.config import TrainConfig
from alexnet2012.data import cache_info, eval_loader, make_synthetic_imagenet, prepare_cache
from alexnet2012.data.cache import open_split
from alexnet2012.errors import UsageError
from alexnet2012.evidence.figures import FILES

sys.path.insert(0, str(Path(__file__).parent))
import bvlc_files  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """A 3-class cache, an imported net (its classes from the cache) and a paper net."""
    root = tmp_path_factory.mktemp("trained")
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=3, val_per_class=3, seed=4, workers=1
    )
    cache = root / "cache"
    prepare_cache(root / "imagenet", cache, workers=1, progress=False)
    w = bvlc_files.weights(seed=3, classes=3)
    bvlc_files.write_onnx(w, root / "three.onnx")
    imported = root / "imported.pt"
    import_weights.main([str(root / "three.onnx"), str(imported), "--classes", str(cache)])
    torch.manual_seed(5)
    model = AlexNet(3)
    with torch.no_grad():  # a paper net whose outputs differ from image to image
        model.columns[0].conv1.weight.mul_(3)
        model.fc8.weight.mul_(30)
    run = root / "paper.pt"
    config = asdict(TrainConfig(cache=str(cache), out=str(root), epochs=2))
    save_checkpoint(
        run,
        {"model": model.state_dict(), "config": config, "num_classes": 3,
         "wnids": cache_info(cache).wnids},
    )  # fmt: skip
    return cache, imported, run, w


def _errors(out: str) -> list[tuple[float, float, float]]:
    """(top-1 %, top-5 %, loss) of each result line."""
    found = []
    for line in out.splitlines():
        if "top-1 error" in line:
            top1 = line.split("top-1 error ")[1].split("%")[0]
            top5 = line.split("top-5 error ")[1].split("%")[0]
            found.append((float(top1), float(top5), float(line.split("(loss ")[1][:-1])))
    return found


def _probs(path: Path, cache: Path, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's view-averaged softmax, written out here from the loader's crops."""
    model = load_trained_model(str(path), "cpu")
    mean = torch.load(path, weights_only=True)["state"].get("mean_image")
    probs, labels = [], []
    for x, y in eval_loader(cache, batch_size=2, crop=model.input_size, views=views,
                            workers=0, mean_image=mean):  # fmt: skip
        with torch.no_grad():
            p = model(x.reshape(-1, *x.shape[-3:])).softmax(1).view(len(y), views, -1).mean(1)
        probs.append(p.double())
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def test_an_ensemble_averages_the_softmax_of_its_models(nets, capsys):
    cache, imported, run, _ = nets
    args = ["--data", str(cache), "--views", "1", "--devices", "cpu", "--workers", "0"]
    evaluate_cli.main(["--checkpoint", str(imported), str(imported), *args])
    one, twice, ensemble = _errors(capsys.readouterr().out)
    assert one == twice == ensemble  # one model given twice is that model

    evaluate_cli.main(["--checkpoint", str(imported), str(run), *args])  # 227 and 224, 2 means
    out = capsys.readouterr().out
    a, b = _probs(imported, cache, 1), _probs(run, cache, 1)
    assert torch.equal(a[1], b[1])
    expected = []
    for probs in (a[0], b[0], (a[0] + b[0]) / 2):
        top1 = (probs.argmax(1) != a[1]).double().mean().item()  # 3 classes: no top-5 miss
        loss = -probs.gather(1, a[1][:, None]).log().mean().item()
        expected.append((round(100 * top1, 2), 0.0, loss))
    got = _errors(out)
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], abs=6e-5)
    assert len({round(e[2], 3) for e in expected}) == 3  # the models and their mean differ
    assert "5 CNNs: top-1 38.1%, top-5 16.4%" in out


def test_classify_names_the_classes_from_the_checkpoint_alone(nets, tmp_path, capsys):
    cache, imported, _, w = nets
    image = open_split(cache, "val").rows(np.array([4]))[0]  # 256x256 RGB, as the cache has it
    Image.fromarray(image).save(tmp_path / "photo.png")
    classify.main([str(imported), str(tmp_path / "photo.png"), "--devices", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'photo.png'}:" and len(lines) == 4  # 3 classes
    # Caffe's forward on the centre 227 crop, BGR, minus Caffe's default mean (104, 117, 123)
    crop = torch.from_numpy(image[14:241, 14:241].astype(np.float32)).permute(2, 0, 1).flip(0)
    caffe = bvlc_files.forward(w, (crop - torch.tensor([104.0, 117.0, 123.0])[:, None, None])[None])
    names = [", ".join(n) for n in cache_info(cache).class_names]
    wnids = cache_info(cache).wnids
    order = caffe[0].argsort(descending=True).tolist()
    assert [line.split("%  ")[1] for line in lines[1:]] == [
        f"{names[k]} ({wnids[k]})" for k in order
    ]
    shown = [float(line.split("%")[0]) for line in lines[1:]]
    assert shown == pytest.approx([100 * caffe[0, k].item() for k in order], abs=0.006)
    assert max(shown) > 40  # far from uniform (33%): the order means something


def test_classify_refuses_what_is_not_an_image(nets, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(UsageError, match="notes.jpg is not an image Pillow can read"):
        classify.main([str(nets[1]), str(tmp_path / "notes.jpg"), "--devices", "cpu"])


def test_an_exported_paper_net_gives_the_same_outputs(nets, tmp_path, capsys):
    import onnxruntime  # in the test extra

    _, _, run, _ = nets
    export.main([str(run), str(tmp_path / "paper")])
    assert "onnxruntime: largest difference" in capsys.readouterr().out
    model = load_trained_model(str(run), "cpu")
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(6)) * 50
    with torch.no_grad():
        expected = model(x).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "paper.onnx"))
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4)
    program = torch.export.load(str(tmp_path / "paper.pt2")).module()
    with torch.no_grad():
        np.testing.assert_allclose(program(x).numpy(), expected, atol=1e-4)
    assert np.abs(expected).max() > 1  # logits that differ: the comparison means something


def test_figures_of_an_imported_net(nets, tmp_path):
    cache, imported, _, _ = nets
    figures.main([str(imported), "--data", str(cache), "--devices", "cpu", "--out", str(tmp_path)])
    for name in FILES[:3]:
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG"
    text = (tmp_path / "figures.md").read_text()
    assert "imported from three.onnx (onnx), trained elsewhere" in text
    assert "two-sided permutation test over the 96 kernels" in text
    with pytest.raises(UsageError, match="names no data: give a prepared cache with --data"):
        figures.main([str(imported), "--devices", "cpu", "--out", str(tmp_path)])
