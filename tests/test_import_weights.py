"""scripts/import_weights.py on files with the BVLC AlexNet's full-size structure, written here
from known random tensors (tests/bvlc_files.py): the imported network (RGB input, the paper's
dropout) against onnxruntime and against Caffe's forward pass written out in the test; the
structure checks; the checkpoint's class names and mean."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet2012 import AlexNet, load_trained_model, paper
from alexnet2012.cli.import_weights import main
from alexnet2012.errors import UsageError
from alexnet2012.importer import Op, match
from alexnet2012.resume import load_trained

sys.path.insert(0, str(Path(__file__).parent))
import bvlc_files  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """Full-size BVLC weights, two BGR images (mean already off) and Caffe's probabilities."""
    folder = tmp_path_factory.mktemp("bvlc")
    w = bvlc_files.weights(seed=0)
    bgr = torch.rand(2, 3, 227, 227, generator=torch.Generator().manual_seed(1)) * 255 - 120
    wnids = bvlc_files.synset_words(folder / "synset_words.txt")
    return folder, w, bgr, bvlc_files.forward(w, bgr), wnids


def _ours(checkpoint: Path | torch.nn.Module, bgr: torch.Tensor) -> torch.Tensor:
    model = (
        checkpoint
        if isinstance(checkpoint, torch.nn.Module)
        else load_trained_model(str(checkpoint), "cpu")
    )
    with torch.no_grad():
        return model(bgr.flip(1).contiguous()).softmax(dim=1).double()  # RGB, like every net


def test_an_onnx_file_gives_onnxruntimes_probabilities(known, capsys):
    import onnxruntime as ort  # in the test extra

    folder, w, bgr, caffe, wnids = known
    bvlc_files.write_onnx(w, folder / "bvlcalexnet.onnx")
    out = folder / "onnx.pt"
    main(
        [str(folder / "bvlcalexnet.onnx"), str(out), "--classes", str(folder / "synset_words.txt")]
    )
    assert "recipe caffe" in capsys.readouterr().out
    session = ort.InferenceSession(str(folder / "bvlcalexnet.onnx"))
    runtime = np.concatenate([session.run(None, {"data_0": x[None].numpy()})[0] for x in bgr])
    model, config, checkpoint = load_trained(str(out), ("cpu",))
    ours = _ours(model, bgr)
    assert caffe.max() > 0.3  # the softmax is far from uniform: the comparison means something
    np.testing.assert_allclose(ours.numpy(), runtime, atol=2e-5)
    np.testing.assert_allclose(ours.numpy(), caffe.numpy(), atol=2e-5)
    assert (config.recipe, config.input_size, model.input_size) == ("caffe", 227, 227)
    assert checkpoint["wnids"] == wnids and checkpoint["class_names"][3] == [
        "class 3",
        "other name 3",
    ]
    mean = checkpoint["mean_image"]  # Caffe's 104,117,123 (B,G,R) as an RGB image on [0,1]
    assert mean.shape == (3, 256, 256)
    assert torch.equal(mean[:, 100, 7], torch.tensor([123.0, 117.0, 104.0]) / 255)


@pytest.mark.parametrize("v1", [True, False], ids=["V1 layers", "layer"])
def test_a_caffemodel_gives_caffes_forward(v1, known):
    folder, w, bgr, caffe, _ = known
    path = folder / f"bvlc_alexnet_{v1}.caffemodel"
    bvlc_files.write_caffemodel(w, path, v1=v1)
    mean_bgr = np.random.default_rng(2).uniform(90, 130, (3, 256, 256)).astype(np.float32)
    bvlc_files.write_mean(folder / "mean.binaryproto", mean_bgr)
    out = folder / f"caffe_{v1}.pt"
    main([
        str(path), str(out), "--classes", str(folder / "synset_words.txt"),
        "--mean-file", str(folder / "mean.binaryproto"),
    ])  # fmt: skip
    np.testing.assert_allclose(_ours(out, bgr).numpy(), caffe.numpy(), atol=2e-5)
    mean = torch.load(out, weights_only=True)["state"]["mean_image"]
    np.testing.assert_allclose(mean.numpy(), mean_bgr[::-1] / 255, rtol=1e-6)


def _ops(**changes) -> list[Op]:
    """The BVLC net as operations without weights' values (shapes only matter elsewhere)."""
    ops = []
    for name, (kind, _, group, kernel, stride, pad) in bvlc_files.LAYERS.items():
        settings = {"kernel": kernel, "stride": stride, "pad": pad, "group": group}
        ops.append(Op(kind, name, settings, np.zeros(1), np.zeros(1)))
        for after in changes.get(name, bvlc_files.AFTER[name]):
            s = {"lrn": dict(size=5, alpha=1e-4, beta=0.75, k=1.0, across=True),
                 "pool": dict(kernel=3, stride=2, max=True)}.get(after, {})  # fmt: skip
            ops.append(Op(after, f"{after}_{name}", s))
    return ops


def test_the_structure_is_identified_by_order_and_settings():
    assert len(match(_ops(), "caffe")) == 8
    assert len(match(_ops(fc6=("relu",), fc7=("relu",)), "caffe")) == 8  # no dropout: a deploy net
    with pytest.raises(UsageError, match="AlexNet has relu, lrn, pool, the file relu, pool, lrn"):
        match(_ops(conv1=("relu", "pool", "lrn")), "caffe")  # CaffeNet's order
    grouped = _ops()
    grouped[0].settings["group"] = 2
    with pytest.raises(UsageError, match="conv1 .* has group 2, AlexNet 1"):
        match(grouped, "caffe")
    k2 = _ops()
    k2[2].settings["k"] = 2.0  # the paper's k: not Caffe's net
    with pytest.raises(UsageError, match="the LRN after conv1"):
        match(k2, "caffe")
    with pytest.raises(UsageError, match="weighted layers are conv, conv, conv, conv, fc, fc, fc"):
        match([op for op in _ops() if op.name != "conv5"], "caffe")


def test_bad_files_are_one_line(tmp_path, known):
    folder = known[0]
    classes = ["--classes", str(folder / "synset_words.txt")]
    (tmp_path / "x.caffemodel").write_bytes(b"\xff\xff\xff not protobuf")
    with pytest.raises(UsageError, match="not a Caffe NetParameter file"):
        main([str(tmp_path / "x.caffemodel"), str(tmp_path / "o.pt"), *classes])
    with pytest.raises(UsageError, match="a .caffemodel or .onnx file is needed"):
        main([str(folder / "synset_words.txt"), str(tmp_path / "o.pt"), *classes])
    with pytest.raises(UsageError, match="three values B,G,R"):
        main([str(tmp_path / "x.caffemodel"), str(tmp_path / "o.pt"), *classes, "--mean", "1,2"])
    (tmp_path / "words.txt").write_text("tench\n")
    with pytest.raises(UsageError, match="line 1 does not start with a WordNet id"):
        main(
            [
                str(tmp_path / "x.caffemodel"),
                str(tmp_path / "o.pt"),
                "--classes",
                str(tmp_path / "words.txt"),
            ]
        )


def test_the_caffe_recipe_is_a_layer_table():
    by_name = {layer.name: layer for layer in paper.RECIPES["caffe"].layers}
    assert [n for n, layer in by_name.items() if layer.lrn] == ["conv1", "conv2"]
    assert {by_name["conv1"].lrn_k, by_name["conv1"].lrn_columns} == {1.0, "both"}
    assert [layer.sees for layer in paper.RECIPES["caffe"].layers] == [
        layer.sees for layer in paper.LAYERS
    ]


def test_the_caffe_net_computes_the_same_on_one_device_per_column():
    torch.manual_seed(0)
    one = AlexNet(5, input_size=227, recipe="caffe").eval()
    two = AlexNet(5, input_size=227, recipe="caffe", devices=("cpu", "cpu")).eval()
    two.load_state_dict(one.state_dict())
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(3)) * 50
    with torch.no_grad():
        assert torch.equal(one(x), two(x))
