"""The image experiment (PAPER_NOTES §5.3-§5.5, §7.3 B): ResNet shapes, the CIFAR loader on
fabricated pickles, augmentation, which blocks each protocol trains, and a tiny end-to-end run."""

import json
import pickle

import numpy as np
import pytest
import torch

from bfclab.config import ConfigError, set_key
from bfclab.experiments import images as cmd
from bfclab.images import augment
from bfclab.probe import Stack, measure
from bfclab.images.config import ImageDataConfig, ResNetConfig, preset
from bfclab.images.data import load, load_cifar
from bfclab.images.resnet import ResNet
from bfclab.images.run import ImageRun, build_model

TINY = {"data.n_train": 192, "data.n_test": 96, "model.width": 4, "model.blocks": 3, "model.downsample": [2],
        "train.epochs_per_stage": 1, "train.batch_size": 32, "train.device": "cpu",
        "probe.kind": "ridge", "probe.max_train": 96}
TINY_ARGS = [a for k, v in TINY.items() if k != "train.device"
             for a in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]


def images_cli(argv: list[str]) -> int:
    """``bfclab images ARGV`` through the project's command line."""
    from bfclab.cli import main

    return main(["images", *argv])


def tiny(method: str, dataset: str = "digits", **over):
    cfg = preset(dataset)
    cfg.method = method
    for k, v in {**TINY, **over}.items():
        set_key(cfg, k, v)
    return cfg


# ---- ResNet -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dim, x_shape, down, expect", [
    (1, (5, 1, 40), [2, 3], [(4, 40), (8, 20), (16, 10)]),
    (2, (5, 3, 32, 32), [2], [(4, 32, 32), (8, 16, 16), (8, 16, 16)]),
    (2, (5, 1, 8, 8), [3], [(4, 8, 8), (4, 8, 8), (8, 4, 4)]),
])
def test_resnet_shapes(dim, x_shape, down, expect):
    net = ResNet(dim, x_shape[1], 7, ResNetConfig(width=4, blocks=3, downsample=down))
    x = torch.randn(*x_shape)
    stack = net.stack()
    feats = stack.features(x)
    assert [tuple(f.shape[1:]) for f in feats] == expect
    for depth in (1, 2, 3):
        assert net(x, depth).shape == (5, 7)
    assert net.stem_filters().shape == (4, x_shape[1], 5, *([5] if dim == 2 else []))
    stem_ids = {id(p) for p in net.stem.parameters()}
    assert stem_ids <= {id(p) for p in stack.block_params(1)}
    assert not stem_ids & {id(p) for p in stack.block_params(2)}


def test_model_init_is_seeded_and_leaves_global_rng_alone():
    data = load(ImageDataConfig(name="digits", n_train=64, n_test=32))
    state = torch.get_rng_state()
    a, b, c = (build_model(tiny("bfc", seed=s), data) for s in (0, 0, 1))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.stem_filters(), c.stem_filters())


# ---- data ---------------------------------------------------------------------------------------

def write_cifar(root, name="cifar10", n=12, seed=0):
    """Fabricated CIFAR pickles; returns the train/test images (uint8, N x 3 x 32 x 32) and labels."""
    rng = np.random.default_rng(seed)
    files = (["data_batch_%d" % i for i in range(1, 6)], ["test_batch"]) if name == "cifar10" else (["train"], ["test"])
    key, classes = (b"labels", 10) if name == "cifar10" else (b"fine_labels", 100)
    out = []
    for group in files:
        imgs, labels = [], []
        for f in group:
            img = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            lab = rng.integers(0, classes, n).tolist()
            obj = {b"data": img.reshape(n, 3072), key: lab, b"batch_label": b"fake"}
            if name == "cifar100":
                obj[b"coarse_labels"] = [0] * n
            (root / f).write_bytes(pickle.dumps(obj))
            imgs.append(img), labels.extend(lab)
        out += [np.concatenate(imgs), np.asarray(labels)]
    return out


@pytest.mark.parametrize("name, n_train", [("cifar10", 60), ("cifar100", 12)])
def test_cifar_loader(tmp_path, name, n_train):
    sub = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    sub.mkdir()
    xtr, ytr, xte, yte = write_cifar(sub, name)
    a, b, c, d = load_cifar(name, str(tmp_path))  # the parent folder is accepted too
    np.testing.assert_allclose(a, xtr / 255.0, atol=1e-7)
    np.testing.assert_array_equal(b, ytr)
    np.testing.assert_allclose(c, xte / 255.0, atol=1e-7)
    np.testing.assert_array_equal(d, yte)
    data = load(ImageDataConfig(name=name, data_dir=str(sub)))
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.dim == 2 and data.in_channels == 3
    assert data.num_classes == (10 if name == "cifar10" else 100)
    m = data.x_train.mean(dim=(0, 2, 3))
    s = data.x_train.std(dim=(0, 2, 3))
    assert torch.allclose(m, torch.zeros(3), atol=1e-4) and torch.allclose(s, torch.ones(3), atol=1e-3)


def _damage(root, how):
    f = root / ("test_batch" if how != "missing" else "data_batch_3")
    if how == "missing":
        f.unlink()
        return "data_batch_3"
    if how == "garbage":
        f.write_bytes(b"not a pickle at all")
        return "test_batch"
    obj = pickle.loads(f.read_bytes(), encoding="bytes")
    if how == "no_labels":
        del obj[b"labels"]
    elif how == "shape":
        obj[b"data"] = obj[b"data"][:, :100]
    elif how == "range":
        obj[b"labels"] = [10] * len(obj[b"labels"])
    elif how == "count":
        obj[b"labels"] = obj[b"labels"][:-1]
    f.write_bytes(pickle.dumps(obj))
    return "test_batch"


@pytest.mark.parametrize("how, needle", [("missing", "not found"), ("garbage", "not a CIFAR python pickle"),
                                         ("no_labels", "b'labels'"), ("shape", "b'data'"),
                                         ("range", "outside"), ("count", "entries")])
def test_cifar_loader_errors(tmp_path, how, needle):
    write_cifar(tmp_path)
    fname = _damage(tmp_path, how)
    with pytest.raises(ConfigError) as e:
        load(ImageDataConfig(name="cifar10", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert "\n" not in msg and fname in msg and needle in msg and "data.data_dir" in msg
    with pytest.raises(ConfigError, match="not found"):
        load(ImageDataConfig(name="cifar10", data_dir=str(tmp_path / "nowhere")))


# ---- augmentation -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 1, 40), (6, 3, 32, 32)])
def test_augmentation_shapes_and_determinism(shape):
    x = torch.randn(*shape)
    outs = [augment.augment(x, True, True, 4, torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert all(o.shape == x.shape for o in outs)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert torch.equal(augment.augment(x, False, False, 4, torch.Generator()), x)


@pytest.mark.parametrize("shape", [(8, 1, 12), (8, 2, 9, 7)])
def test_crop_is_a_window_of_the_padded_image_and_flip_mirrors(shape):
    x = torch.randn(*shape)
    pad, dim = 3, len(shape) - 2
    crop = augment.random_crop(x, pad, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, [pad] * (2 * dim))
    offsets = set()
    for i in range(shape[0]):
        found = [(a, b) for a in range(2 * pad + 1 if dim == 2 else 1) for b in range(2 * pad + 1)
                 if torch.equal(crop[i], padded[i][..., a:a + shape[2], b:b + shape[-1]] if dim == 2
                                else padded[i][..., b:b + shape[-1]])]
        assert found, i
        offsets |= set(found)
    assert len({b for _, b in offsets}) > 1  # the offsets vary, and along each axis on its own
    assert dim == 1 or any(a != b for a, b in offsets)
    flipped = augment.random_flip(x, torch.Generator().manual_seed(0))
    kinds = [torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1)) for i in range(shape[0])]
    assert all(kinds) and any(not torch.equal(flipped[i], x[i]) for i in range(shape[0]))
    assert augment.resolve("auto", "cifar10") == (True, True) and augment.resolve("auto", "digits") == (False, False)


# ---- protocols ----------------------------------------------------------------------------------

def _equal_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def stage_snapshots(cfg):
    """States of every block at init and at the end of every stage (full state, BN buffers too)."""
    run = ImageRun(cfg, progress=False, log=lambda s: None)
    B, stack = cfg.model.blocks, run.probe.model
    snaps = {0: {c: measure.block_state(stack, c) for c in range(1, B + 1)}}
    end = run.probe._stage_end

    def hook(b, depth):
        snaps[b] = {c: measure.block_state(stack, c) for c in range(1, B + 1)}
        end(b, depth)

    run.probe._stage_end = hook
    res = run.run()
    return snaps, res


@pytest.mark.parametrize("method, trains", [
    ("layerwise", lambda c, b: c == b),
    ("window:1", lambda c, b: b - 1 <= c <= b),
    ("bfc", lambda c, b: c <= b),
    ("e2e", lambda c, b: True),
])
def test_which_blocks_train_in_each_stage(method, trains):
    cfg = tiny(method, **{"model.blocks": 4})
    snaps, res = stage_snapshots(cfg)
    for b in range(1, 5):
        for c in range(1, 5):
            changed = not _equal_state(snaps[b - 1][c], snaps[b][c])
            assert changed == trains(c, b), (method, "block", c, "stage", b)
    wc = res["weight_change"]
    for c in range(1, 4):  # block c's change by the end: zero exactly when it never trains after stage c
        assert (wc[c][4] == 0.0) == (not any(trains(c, b) for b in range(c + 1, 5))), (method, c)


def test_layerwise_probes_and_revert_are_consistent():
    _, res = stage_snapshots(tiny("layerwise"))
    B = res["blocks"]
    assert B == TINY["model.blocks"]
    # frozen features through the same operations: the same probe result, bit for bit
    assert all(res["probe_own"][b] == res["probe_final"][b] for b in range(1, B + 1))
    # nothing moved: reverting (or the random change of the same, zero, norm) costs nothing, exactly
    assert set(res["revert"]) == set(range(1, B))
    assert all(r["cost"] == 0.0 and r["random_cost"] == 0.0 for r in res["revert"].values())
    assert all(res["cka"][b] == pytest.approx(1.0, abs=1e-9) for b in range(1, B + 1))
    assert res["stem_filters"]["after_stage_1"] == res["stem_filters"]["final"]
    changes = [v for c in res["direction_change"].values() for v in c.values()]
    assert len(changes) == B * (B - 1) // 2 and all(v == 0.0 for v in changes)  # block c at every stage b > c


def test_direction_change_ignores_rescaling():
    res = ResNet(1, 1, 3, ResNetConfig(width=4, blocks=2))
    net = Stack(res.as_blocks(), list(res.heads))
    ref = measure.block_state(net, 2)
    with torch.no_grad():
        net.block(2).conv1.weight.mul_(0.3)
    assert measure.direction_change(net, 2, ref) < 1e-6
    assert 0.05 < measure.weight_change(net, 2, ref) <= 0.7 + 1e-9  # only conv1 shrank, by 70%
    with torch.no_grad():
        net.block(2).conv2.weight.neg_()
    assert measure.direction_change(net, 2, ref) > 1.0


# ---- command ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_tiny_experiment_writes_every_file(tmp_path, dataset, capsys):
    out = tmp_path / "exp"
    argv = ["--dataset", dataset, "--methods", "e2e,layerwise,bfc", "--seeds", "0", "--out", str(out),
            "--device", "cpu", *TINY_ARGS]
    assert images_cli(argv) == 0
    for method in ("e2e", "layerwise", "bfc"):
        d = out / method / "seed0"
        for name in ("config.json", "metrics.jsonl", "result.json", "filters.png"):
            assert (d / name).stat().st_size > 0, name
        res = json.loads((d / "result.json").read_text())
        for key in ("method", "seed", "dataset", "test_metric", "stage_metric", "weight_change", "direction_change",
                    "probe_own", "probe_final", "cka", "revert", "seconds", "config"):
            assert key in res, key
        assert res["method"] == method and res["dataset"] == dataset and set(res["stage_metric"]) == {"1", "2", "3"}
        assert json.loads((d / "config.json").read_text()) == res["config"]
        events = [json.loads(line)["event"] for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert events.count("stage_end") == 3 and events.count("epoch") == 3 and events[-1] == "final"
    for name in ("summary.md", f"summary-{dataset}.png", "experiment.json"):
        assert (out / name).stat().st_size > 0, name
    text = cmd.report_section(out)
    assert "| layerwise |" in text and f"summary-{dataset}.png" in text and "filters.png" in text
    figs = tmp_path / "figs"
    text = cmd.report_section(out, figs)  # report convention: figures in figdir, bare-name links
    assert f"![summary](images-{dataset}-summary.png)" in text
    assert (figs / f"images-{dataset}-summary.png").is_file() and (figs / f"images-{dataset}-filters-bfc.png").is_file()
    assert "No image results" in cmd.report_section(tmp_path / "empty")
    first = (out / "bfc" / "seed0" / "result.json").read_text()
    assert images_cli(argv) == 0  # same config: kept, not retrained
    assert (out / "bfc" / "seed0" / "result.json").read_text() == first
    assert "kept" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "svhn"], "data.name"),
    (["--methods", "e2e,deep"], "method"),
    (["--seeds", "0,x"], "--seeds"),
    (["--dataset", "cifar10"], "data.data_dir"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--model.blocks", "0"], "model.blocks"),
    (["--model.downsample", "[9]"], "model.downsample"),
    (["--train.nosuch", "1"], "train.nosuch"),
    (["--data.augment", "rotate"], "data.augment"),
])
def test_bad_input_one_line_error(tmp_path, capsys, argv, needle):
    out = tmp_path / "exp"
    assert images_cli([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_requested_without_cuda(tmp_path, capsys):
    assert images_cli(["--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "train.device" in capsys.readouterr().err
