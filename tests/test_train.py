"""The training job, `python -m inception_fast train`, on tiny images (the d2l network runs down to 1x1)."""

import contextlib
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import pytest
import torch
from torch import nn

from inception_fast.__main__ import main as cli_main
from inception_fast.backends import onednn_backend
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound, rel_error
from inception_fast.train import build_models

pytest.importorskip("sklearn", reason="the digits come from scikit-learn (pip install 'inception_fast[train]')")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--image-size",
    "8",
    "--batch-size",
    "16",
    "--steps-per-epoch",
    "2",
    "--test-limit",
    "32",
    "--no-progress",
    "--backend",
    "torch",
]


def flat(state, like):
    return torch.cat([state[k].flatten() for k in like])


def train(out, *extra):
    return cli_main(["train", "--out", str(out), *TINY, *extra])


def load(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)


def test_trains_on_digits_resumes_to_the_same_weights_and_plots_both_models(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(whole, "--epochs", "2", "--reference") == 0
    printed = capsys.readouterr().out
    assert "epoch   1/2 fused" in printed and "reference" in printed and "img/s" in printed
    history = json.loads((whole / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        for model in ("fused", "reference"):
            assert set(h[model]) >= {"train_loss", "train_acc", "test_acc", "images_per_s"}
            assert 0 <= h[model]["test_acc"] <= 1 and h[model]["images_per_s"] > 0
        # (the losses sit near ln 10 at this size, so the curves agreeing proves little: the weight
        # updates are compared below)
        assert abs(h["fused"]["train_loss"] - h["reference"]["train_loss"]) < 1e-3
    assert (whole / "curves.png").stat().st_size > 1000

    assert train(split, "--epochs", "2", "--reference", "--stop-after", "1") == 0
    assert "stopped after epoch 1" in capsys.readouterr().out
    assert load(split)["epoch"] == 1 and not (split / "curves.png").exists()
    assert train(split, "--epochs", "2", "--reference", "--resume") == 0
    assert "epochs 2-2" in capsys.readouterr().out
    before = (split / "checkpoint.pt").stat().st_mtime_ns
    assert train(split, "--epochs", "2", "--reference", "--resume") == 0  # nothing left to train
    printed = capsys.readouterr().out
    assert "nothing to train" in printed and "checkpoint.pt" not in printed.splitlines()[-1]
    assert (split / "checkpoint.pt").stat().st_mtime_ns == before
    a, b = load(whole), load(split)
    assert b["epoch"] == 2
    init = build_models("d2l", 10, 1, 0)["fused"].state_dict()
    for model in ("fused", "reference"):
        moved = rel_error(flat(a["models"][model], init), flat(init, init))
        assert moved > 1e-4, "training did not move the weights: the comparison could not fail"
        for key, value in a["models"][model].items():
            assert torch.equal(value, b["models"][model][key]), f"{model} {key} differs after resume"
    # same initial weights, same batches: the fused model's weight updates are the reference's
    # (a fused block off by 0.1% leaves them 10% apart; fp32 rounding, ~1e-6)
    update = {model: flat(a["models"][model], init) - flat(init, init) for model in ("fused", "reference")}
    check_close(update["fused"], update["reference"], TOLERANCE["fp32"], "the fused model's weight updates")
    assert [h["fused"]["train_loss"] for h in a["history"]] == [h["fused"]["train_loss"] for h in b["history"]]

    # a checkpoint from another variant or number of classes is refused, with the reason
    with pytest.raises(SystemExit) as exc:
        train(split, "--epochs", "3", "--variant", "paper", "--image-size", "32", "--resume")
    assert exc.value.code == 2
    assert "written for variant 'd2l'" in capsys.readouterr().err
    # ... and so is one written with another seed: the resumed run would not be the one it continues
    with pytest.raises(SystemExit) as exc:
        train(split, "--epochs", "3", "--reference", "--seed", "5", "--resume")
    assert exc.value.code == 2
    assert "written for seed 0, this run has 5" in capsys.readouterr().err
    # ... and one written with other epochs (--steps-per-epoch): the epochs would not be the run's
    with pytest.raises(SystemExit) as exc:
        train(split, "--epochs", "3", "--reference", "--steps-per-epoch", "3", "--resume")
    assert exc.value.code == 2
    assert "written for steps_per_epoch 2, this run has 3" in capsys.readouterr().err
    # (a checkpoint written before the steps were recorded resumes as it did)
    older = load(split)
    del older["meta"]["steps_per_epoch"]
    del older["meta"]["layout"]  # (nor the layout: the d2l network's has not changed)
    torch.save(older, split / "checkpoint.pt")
    assert train(split, "--epochs", "3", "--reference", "--resume") == 0
    assert load(split)["epoch"] == 3
    # A paper-variant checkpoint without the layout was written for the paper network's earlier
    # maxpool4 and dropout: refused (this one is the d2l run's, labelled so, at the paper's size).
    older = load(split)
    del older["meta"]["layout"]
    older["meta"].update(variant="paper", image_size=32)
    torch.save(older, split / "checkpoint.pt")
    with pytest.raises(SystemExit) as exc:
        train(split, "--epochs", "4", "--reference", "--variant", "paper", "--image-size", "32", "--resume")
    assert exc.value.code == 2
    assert "written for the paper variant as it was before its maxpool4 became 3x3/2" in capsys.readouterr().err


def test_bfloat16_on_cpu_trains_both_models_within_the_tolerance_rule(tmp_path, capsys):
    """--dtype bfloat16 on a CPU with oneDNN's bfloat16 convolutions: both models train under CPU
    autocast, and the fused model's weight updates are within the tolerance table's rule: at most
    twice the reference's own bfloat16 error, both against the reference's float32 updates (whose
    own error, ~1e-6, is far below bfloat16's).  Over two steps bfloat16 moves the updates by ~11%,
    so this catches a fused model off by ~25% or one that ignores autocast; the blocks' own bfloat16
    accuracy is test_train_bn's.  Elsewhere it is one clear line."""
    if not onednn_backend.bf16_supported():
        with pytest.raises(SystemExit) as exc:
            train(tmp_path / "o", "--dtype", "bfloat16", "--device", "cpu")
        assert exc.value.code == 2
        _one_line(capsys, "--dtype bfloat16 on cpu trains with oneDNN's bfloat16 convolutions")
        return
    argv = ("--epochs", "1", "--reference", "--image-size", "32", "--batch-size", "8")
    assert train(tmp_path / "fp32", *argv) == 0
    assert train(tmp_path / "bf16", *argv, "--dtype", "bfloat16") == 0
    assert "bfloat16" in capsys.readouterr().out
    init = build_models("d2l", 10, 1, 0)["fused"].state_dict()
    start = flat(init, init)
    update = {
        (dtype, model): flat(load(tmp_path / dtype)["models"][model], init) - start
        for dtype in ("fp32", "bf16")
        for model in ("fused", "reference")
    }
    exact = update["fp32", "reference"]
    assert rel_error(start + exact, start) > 1e-4, "training did not move the weights: the comparison could not fail"
    for model in ("reference", "fused"):  # both computed in bfloat16 (~10% of a small update), not float32
        own = rel_error(update["bf16", model], exact)
        assert own > 100 * TOLERANCE["fp32"], f"the {model}'s bfloat16 updates differ by only {own:.1e}: not bfloat16"
    check_close(
        update["bf16", "fused"],
        exact,
        reduced_precision_bound(update["bf16", "reference"], exact),
        "the fused model's bfloat16 weight updates",
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "nope"], "--backend 'nope' is unavailable on cpu"),
        (["--variant", "paper", "--image-size", "8"], "--image-size 8 is too small for variant 'paper'"),
        (["--data", "fashion-mnist"], "--data fashion-mnist needs --data-dir"),
        (["--data", "imagefolder", "--data-dir", "/nonexistent/dir"], "--data-dir /nonexistent/dir is not a directory"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--resume"], "--resume: no checkpoint"),
        (["--device", "tpu"], "--device tpu"),
        (["--device", ""], "--device: empty"),
        (["--out", " "], "--out: empty path"),
        (["--seed", "99999999999999999999"], "--seed must be an integer from 0 to 2**62 - 1"),
        (["--variant", "torchvision", "--image-size", "15", "--batch-size", "1"], "Expected more than 1 value"),
        (["--image-size", "3000000000"], "--batch-size 128 at --image-size 3000000000: a batch beyond any machine's"),
        (["--batch-size", "99999999999999999999"], "--batch-size 99999999999999999999 at --image-size 96: a batch"),
    ],
)
def test_bad_values_get_one_clear_line(tmp_path, capsys, monkeypatch, argv, message):
    import inception_fast.train as job

    def first_epoch(*args):  # a value taken for good would start training: fail at once instead
        raise AssertionError(f"{argv} was taken for a good value")

    monkeypatch.setattr(job, "_Bar", first_epoch)
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "--out", str(tmp_path / "o"), "--no-progress", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _one_line(capsys, message, code=2):
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_out_resume_and_environment_problems_are_found_before_training(tmp_path, capsys, monkeypatch):
    """Each is one error line before the first epoch: a file name the job writes taken by a
    directory, checkpoints that are damaged, unreadable or a directory, a WORLD_SIZE without
    torchrun's rendezvous; a resume already at --stop-after trains nothing."""
    out = tmp_path / "o"
    os.makedirs(out / "checkpoint.pt")
    with pytest.raises(SystemExit):
        train(out, "--epochs", "1")
    _one_line(capsys, "checkpoint.pt there is a directory")
    with pytest.raises(SystemExit):
        train(out, "--epochs", "1", "--resume")
    _one_line(capsys, "checkpoint.pt there is a directory")
    os.rmdir(out / "checkpoint.pt")

    assert train(out, "--epochs", "3", "--stop-after", "1") == 0
    assert train(out, "--epochs", "3", "--stop-after", "1", "--resume") == 0
    assert "already holds epoch 1, --stop-after 1: nothing to train" in capsys.readouterr().out
    assert load(out)["epoch"] == 1
    good = load(out)
    for damage, message in (
        (lambda c: c.update(rng=[]), "holds RNG states for 0 process(es)"),
        (lambda c: c["models"].update(fused={"x": torch.zeros(1)}), "Missing key(s) in state_dict"),
        (lambda c: c.pop("history"), "is damaged: missing history"),
        (lambda c: c.update(epoch="one"), "epoch 'one'"),
        (
            lambda c: c["models"].update(fused={k: v * float("nan") for k, v in good["models"]["fused"].items()}),
            "holds NaN or Inf",
        ),
    ):
        ckpt = {**good, "models": dict(good["models"])}
        damage(ckpt)
        torch.save(ckpt, out / "checkpoint.pt")
        with pytest.raises(SystemExit):
            train(out, "--epochs", "3", "--resume")
        _one_line(capsys, message)
    # Bytes changed inside a tensor's record: torch.load would load other numbers; the zip's CRC-32 says so.
    torch.save(good, out / "checkpoint.pt")
    raw = bytearray((out / "checkpoint.pt").read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4096] = bytes(4096)
    (out / "checkpoint.pt").write_bytes(bytes(raw))
    with pytest.raises(SystemExit):
        train(out, "--epochs", "3", "--resume")
    _one_line(capsys, "fails its checksum); it cannot be resumed from")
    for garbage in (b"garbage", b"hello world" * 20):  # torch.load: UnpicklingError, KeyError('101')
        (out / "checkpoint.pt").write_bytes(garbage)
        with pytest.raises(SystemExit):
            train(out, "--epochs", "3", "--resume")
        _one_line(capsys, "not a PyTorch checkpoint file (it does not unpickle)")
    torch.save({"epoch": 1, "models": {}}, out / "checkpoint.pt")  # another program's dict
    with pytest.raises(SystemExit):
        train(out, "--epochs", "3", "--resume")
    _one_line(capsys, "is not a checkpoint of this job")
    os.remove(out / "checkpoint.pt")
    os.symlink(os.devnull, out / "checkpoint.pt")  # a device, not a file
    with pytest.raises(SystemExit):
        train(out, "--epochs", "3", "--resume")
    _one_line(capsys, "checkpoint.pt is not a file")
    os.remove(out / "checkpoint.pt")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(SystemExit):
        train(tmp_path / "d", "--epochs", "1")
    _one_line(capsys, "WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT unset")


def test_a_last_batch_batch_norm_cannot_take_is_dropped(tmp_path, capsys):
    """17 images in batches of 16 at 15x15: the last batch, one image whose last maps are 1x1, would
    fail in train-mode BatchNorm; it is dropped with a note, as drop_last would."""
    root = _write_fmnist(tmp_path / "fm", gz=False, n_train=17)
    argv = ["--data", "fashion-mnist", "--data-dir", str(root), "--variant", "torchvision", "--epochs", "1"]
    assert train(tmp_path / "o", *argv, "--image-size", "15") == 0
    assert "last batch (1 image) is dropped" in capsys.readouterr().out
    history = json.loads((tmp_path / "o" / "history.json").read_text())["history"]
    assert history[0]["fused"]["train_acc"] >= 0


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "--device", "cuda", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def _idx(data: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, data.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    return header + data.to(torch.uint8).numpy().tobytes()


def _write_fmnist(folder, gz: bool, n_train=20, n_test=8):
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    files = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (n_train, 28, 28), generator=g),
        "train-labels-idx1-ubyte": torch.randint(0, 10, (n_train,), generator=g),
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (n_test, 28, 28), generator=g),
        "t10k-labels-idx1-ubyte": torch.randint(0, 10, (n_test,), generator=g),
    }
    for name, data in files.items():
        path = os.path.join(folder, name + (".gz" if gz else ""))
        with (gzip.open if gz else open)(path, "wb") as f:
            f.write(_idx(data))
    return folder


def test_fashion_mnist_idx_files_gzipped_or_not_and_bad_files(tmp_path, capsys):
    root = tmp_path / "fm"
    _write_fmnist(root / "FashionMNIST" / "raw", gz=True)  # torchvision's layout
    assert train(tmp_path / "o1", "--data", "fashion-mnist", "--data-dir", str(root), "--epochs", "1") == 0
    assert "fashion-mnist: 20 train / 8 test images" in capsys.readouterr().out
    flat = _write_fmnist(tmp_path / "flat", gz=False)  # the files directly in the directory
    assert train(tmp_path / "o2", "--data", "fashion-mnist", "--data-dir", str(flat), "--epochs", "1") == 0
    capsys.readouterr()

    bad = os.path.join(flat, "t10k-images-idx3-ubyte")
    with open(bad, "r+b") as f:
        f.truncate(100)
    with pytest.raises(SystemExit) as exc:
        train(tmp_path / "o3", "--data", "fashion-mnist", "--data-dir", str(flat))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and bad in err and "truncated" in err
    with open(bad, "wb") as f:
        f.write(b"not an idx file at all")
    with pytest.raises(SystemExit):
        train(tmp_path / "o3", "--data", "fashion-mnist", "--data-dir", str(flat))
    assert "not an IDX file" in capsys.readouterr().err
    with open(bad, "wb") as f:
        f.write(_idx(torch.zeros(0, 28, 28)))
    with pytest.raises(SystemExit):
        train(tmp_path / "o3", "--data", "fashion-mnist", "--data-dir", str(flat))
    assert "holds no data (header [0, 28, 28])" in capsys.readouterr().err
    os.remove(bad)
    with open(bad + ".gz", "wb") as f:
        f.write(gzip.compress(_idx(torch.zeros(8, 28, 28)))[:40])  # cut short
    with pytest.raises(SystemExit):
        train(tmp_path / "o3", "--data", "fashion-mnist", "--data-dir", str(flat))
    assert "cannot read" in capsys.readouterr().err
    os.remove(bad + ".gz")
    with pytest.raises(SystemExit):
        train(tmp_path / "o3", "--data", "fashion-mnist", "--data-dir", str(flat))
    assert "no t10k-images-idx3-ubyte" in capsys.readouterr().err


@pytest.mark.parametrize(
    "head, message",
    [
        (b"\x00\x01\x08\x01", "is not an IDX file (bad magic number)"),
        (b"\x01\x00\x08\x01", "is not an IDX file (bad magic number)"),
        (b"\x00\x00\x08\x03", "is truncated (its header is incomplete)"),  # 3 sizes, 1 given
        (b"\x00\x00\x08\x01", None),
    ],
    ids=["magic-byte-1", "magic-byte-0", "header-cut", "good"],
)
def test_read_idx_checks_the_magic_number_and_the_header(tmp_path, head, message):
    from inception_fast.cli import UsageError
    from inception_fast.train import read_idx

    path = tmp_path / "f-idx1-ubyte"
    path.write_bytes(head + (3).to_bytes(4, "big") + bytes([5, 0, 255]))
    if message is None:
        assert torch.equal(read_idx(str(path)), torch.tensor([5, 0, 255], dtype=torch.uint8))
    else:
        with pytest.raises(UsageError, match=re.escape(message)):
            read_idx(str(path))


def test_image_folder(tmp_path, capsys):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for cls in ("cat", "dog", "eel"):
        os.makedirs(tmp_path / "imgs" / cls)
        for i in range(4):
            pixels = torch.randint(0, 256, (10 + i, 12, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    assert train(tmp_path / "o", "--data", "imagefolder", "--data-dir", str(tmp_path / "imgs"), "--epochs", "1") == 0
    assert "3 classes" in capsys.readouterr().out
    ckpt = load(tmp_path / "o")
    assert ckpt["meta"]["num_classes"] == 3 and ckpt["meta"]["in_channels"] == 3
    os.makedirs(tmp_path / "only" / "train")
    os.rename(tmp_path / "imgs", tmp_path / "only" / "train" / "imgs")
    with pytest.raises(SystemExit):
        train(tmp_path / "o2", "--data", "imagefolder", "--data-dir", str(tmp_path / "only"), "--epochs", "1")
    _one_line(capsys, "holds train/ but no test/ or val/ beside it")
    # A 16-bit greyscale image is scaled to [0, 1] (Pillow's RGB conversion would clip it at 255);
    # a 32-bit one, whose range is unknown, is refused.
    from inception_fast.train import FolderImages

    ramp = tmp_path / "ramp.png"
    Image.fromarray((torch.arange(256).reshape(16, 16) * 257).numpy().astype("uint16")).save(ramp)
    assert Image.open(ramp).mode.startswith("I;16")
    x, _ = FolderImages([(str(ramp), 0)]).batch([0], 16)
    assert torch.equal(x[0, 0], torch.arange(256.0).reshape(16, 16) / 255), "not scaled to [0, 1]"
    Image.fromarray((torch.arange(120).reshape(10, 12) * 500).numpy().astype("int32")).save(
        tmp_path / "only" / "train" / "imgs" / "deep.tif"
    )
    for split, cls in (("train", "eel"), ("test", "imgs"), ("test", "eel")):  # two classes, each in both
        os.makedirs(tmp_path / "only" / split / cls, exist_ok=True)
        pixels = torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / "only" / split / cls / "0.png")
    with pytest.raises(SystemExit):
        train(tmp_path / "o3", "--data", "imagefolder", "--data-dir", str(tmp_path / "only"), "--epochs", "1")
    _one_line(capsys, "deep.tif: its pixels are I (32-bit or floating-point)")
    assert not (tmp_path / "o3").exists(), "a run that failed before writing a file left its --out behind"


def test_environment_and_edited_history_get_one_clear_line(tmp_path, capsys, monkeypatch):
    """A bad INCEPTION_FAST_CACHE_ENTRIES or MASTER_PORT is refused up front; a checkpoint whose
    history records are not epochs' is refused on --resume, not when the plot reads them."""
    monkeypatch.setenv("INCEPTION_FAST_CACHE_ENTRIES", "-3")
    with pytest.raises(SystemExit):
        train(tmp_path / "o", "--epochs", "1")
    _one_line(capsys, "INCEPTION_FAST_CACHE_ENTRIES must be a positive integer, got '-3'")
    monkeypatch.delenv("INCEPTION_FAST_CACHE_ENTRIES")
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "abc")):
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        train(tmp_path / "o", "--epochs", "1")
    _one_line(capsys, "MASTER_PORT='abc': not a port number (1 to 65535)")
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name)
    assert train(tmp_path / "o", "--epochs", "1", "--reference") == 0
    ckpt = load(tmp_path / "o")
    ckpt["history"] = [1]
    torch.save(ckpt, tmp_path / "o" / "checkpoint.pt")
    with pytest.raises(SystemExit):
        train(tmp_path / "o", "--epochs", "2", "--reference", "--resume")
    _one_line(capsys, "is damaged or not this run's: a history record is not an epoch's: 1")


def test_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "inception_fast", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    for option in (
        "--variant",
        "--backend",
        "--device",
        "--dtype",
        "--compile",
        "--epochs",
        "--lr",
        "--batch-size",
        "--image-size",
        "--seed",
        "--out",
        "--resume",
        "--reference",
        "--data",
        "--data-dir",
        "--stop-after",
        "--no-progress",
    ):
        assert option in out
    assert "dropout (default: 0)" in " ".join(out.split()), "--seed's default 0 is a value, not no value"


def _two_processes(*program) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 PROGRAM...`` on the CPU (gloo, one thread each),
    which must succeed.  Its temporary files (torchrun's log folder) go to a folder removed after."""
    with tempfile.TemporaryDirectory(prefix="torchrun_") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "TMPDIR": tmp}
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *program],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=300,
        )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def _torchrun_two(out, args) -> subprocess.CompletedProcess:
    """``python -m inception_fast train --out OUT ARGS`` in two processes (``_two_processes``)."""
    return _two_processes("-m", "inception_fast", "train", "--out", str(out), *args)


def test_two_processes_evaluate_when_one_has_no_test_image(tmp_path):
    """torchrun, 2 CPU processes, a BatchNorm variant, one test image: rank 1 has none to evaluate.
    Evaluation must not go through the DDP wrapper's forward (its first forward after training
    broadcasts the buffers, a collective rank 1 would never join: the job hung for good), and the
    accuracy is the one a single process gets from the model rank 0 saved (with one image 0 or 1:
    this catches a count taken over the wrong images, e.g. 0.5 for one right of two, not a
    slightly different model)."""
    out = tmp_path / "ddp"
    args = ["--variant", "torchvision", "--image-size", "32", "--batch-size", "4", "--steps-per-epoch", "1"]
    args += ["--epochs", "1", "--test-limit", "1", "--no-progress", "--backend", "torch", "--lr", "0.5"]
    _torchrun_two(out, args)
    from inception_fast.train import _Dist, _evaluate, _first, load_data

    model = build_models("torchvision", 10, 1, 0)["fused"]
    model.load_state_dict(load(out)["models"]["fused"])
    data = load_data("digits", None)
    data.test = _first(data.test, 1)
    alone = _evaluate(model, data.test, 32, 2, torch.device("cpu"), _Dist(0, 1), contextlib.nullcontext)
    assert json.loads((out / "history.json").read_text())["history"][0]["fused"]["test_acc"] == alone


def test_two_processes_with_gloo_equal_one_process_on_the_combined_batch(tmp_path):
    """torchrun, 2 CPU processes, gloo: each trains on its half of every global batch and DDP averages
    the gradients, so after k steps the weights are those of one process on the whole batches; the
    test accuracy, which the processes count on their halves of the test images, is one process's;
    and the processes' RNG states (their dropout masks) differ."""
    args = [
        "--image-size",
        "16",
        "--batch-size",
        "32",
        "--steps-per-epoch",
        "3",
        "--epochs",
        "1",
        "--test-limit",
        "16",
        "--no-progress",
        "--backend",
        "torch",
        "--seed",
        "3",
    ]
    run = _torchrun_two(tmp_path / "ddp", args)
    assert "over 2 processes" in run.stdout
    assert cli_main(["train", "--out", str(tmp_path / "one"), *args]) == 0
    ddp, one = load(tmp_path / "ddp")["models"]["fused"], load(tmp_path / "one")["models"]["fused"]
    init = build_models("d2l", 10, 1, 3)["fused"].state_dict()
    err = check_close(flat(ddp, init), flat(one, init), TOLERANCE["fp32"], "parameters after 3 data-parallel steps")
    # Three steps move the weights by ~4e-4 of their norm; processes that did not average their
    # gradients would be off by a sizeable part of that, well past the tolerance.
    moved = rel_error(flat(one, init), flat(init, init))
    assert moved > 10 * TOLERANCE["fp32"], f"the weights hardly moved ({moved:.1e}): the comparison could not fail"
    print(f"moved {moved:.2e}, DDP vs one process {err:.2e}")
    # Each process evaluates every other test image and the counts are summed: the same weights give
    # one process's accuracy (two processes that both took rank 0's half would count it twice).
    accuracy = {
        run: [h["fused"]["test_acc"] for h in json.loads((tmp_path / run / "history.json").read_text())["history"]]
        for run in ("ddp", "one")
    }
    assert accuracy["ddp"] == accuracy["one"], f"test accuracy of 2 processes vs one: {accuracy}"
    # Each process draws its own dropout masks (seeded by rank once the weights are built): the RNG
    # states the checkpoint holds, one per rank, differ; processes seeded alike would hold the same.
    rng = load(tmp_path / "ddp")["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"]), "both ranks hold the same RNG state"


def test_a_lost_gpu_context_ends_training_in_one_line(capsys, monkeypatch):
    from inception_fast import train as job
    from inception_fast.choices import ContextLost

    def lost(args):
        raise ContextLost("inception_fast: the CUDA context became unusable on cuda:0 while candidate 'pool:aten' ran")

    monkeypatch.setattr(job, "_run", lost)
    with pytest.raises(SystemExit) as exc:
        job.main(["--epochs", "1"])
    assert exc.value.code == 1
    _one_line(capsys, "error: inception_fast: the CUDA context became unusable on cuda:0")


def _record_shuffles(monkeypatch) -> tuple:
    """Every DistributedSampler order the job draws, appended to the list returned, and the
    sampler's own __iter__ (for the orders a test computes itself)."""
    from torch.utils.data import DistributedSampler

    orders = []
    iterate = DistributedSampler.__iter__

    def recording(sampler):
        order = list(iterate(sampler))
        orders.append(order)
        return iter(order)

    monkeypatch.setattr(DistributedSampler, "__iter__", recording)
    return orders, iterate


def test_resume_of_a_dropout_variant_restores_the_rng_shuffles_each_epoch_and_takes_a_new_lr(
    tmp_path, capsys, monkeypatch
):
    """The paper variant (dropout 0.4): two epochs in one run and the same split by --stop-after 1 and
    --resume end with bit-identical weights (the resumed process takes the checkpoint's RNG state, so
    epoch 2 draws the same dropout masks, and trains in train mode as the whole run's epoch 2 does
    after epoch 1's evaluation); each epoch has its own shuffle, the resumed epoch the whole run's;
    a resume with another --batch-size is refused in one line; one with another --lr trains with it
    (the optimizer's learning rate in the checkpoint it writes)."""
    orders, _ = _record_shuffles(monkeypatch)
    argv = ("--variant", "paper", "--image-size", "32", "--batch-size", "8", "--test-limit", "8", "--epochs", "2")
    argv += ("--steps-per-epoch", "1")
    whole, split, new_lr = tmp_path / "whole", tmp_path / "split", tmp_path / "lr"
    assert train(whole, *argv) == 0
    assert len(orders) == 2 and orders[0] != orders[1], "both epochs took the same shuffle"
    assert train(split, *argv, "--stop-after", "1") == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        train(split, *argv, "--batch-size", "4", "--resume")
    assert exc.value.code == 2
    _one_line(capsys, "written for batch_size 8, this run has 4")
    os.makedirs(new_lr)
    (new_lr / "checkpoint.pt").write_bytes((split / "checkpoint.pt").read_bytes())
    assert train(split, *argv, "--resume") == 0
    assert orders[2:] == orders[:2], "the resumed run's epochs took other shuffles than the whole run's"
    a, b = load(whole)["models"]["fused"], load(split)["models"]["fused"]
    init = build_models("paper", 10, 1, 0)["fused"].state_dict()
    moved = rel_error(flat(a, init), flat(init, init))
    assert moved > 1e-4, "training did not move the weights: the comparison could not fail"
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} differs after resume"
    assert train(new_lr, *argv, "--resume", "--lr", "0.03") == 0
    groups = load(new_lr)["optimizers"]["fused"]["param_groups"]
    assert [g["lr"] for g in groups] == [0.03] * len(groups), "the resumed run kept the checkpoint's learning rate"


def test_evaluation_leaves_the_model_in_train_mode(tmp_path):
    """The job evaluates after each epoch's training and trains on: evaluation (in eval mode) must
    hand the model back in train mode, every module of it (else BatchNorm's batch statistics and
    dropout would be off from the second epoch on)."""
    from inception_fast.train import _Dist, _evaluate, _first, load_data

    data = load_data("digits", None)
    for model in build_models("paper", 10, 1, 0, reference=True).values():
        assert model.training
        acc = _evaluate(model, _first(data.test, 4), 32, 4, torch.device("cpu"), _Dist(0, 1), contextlib.nullcontext)
        assert 0 <= acc <= 1
        assert all(m.training for m in model.modules()), "evaluation left the model in eval mode"


def test_initial_weights_are_xavier_uniform_with_the_kernel_area_in_both_fans():
    """build_models draws each variant's conv and linear weights from Xavier's U(-b, b), b =
    sqrt(6 / (fan_in + fan_out)), the fans as torch.nn.init computes them (the kernel area in both),
    gain 1, biases zero: the largest |w| of each weight (thousands of draws) lies in (0.9 b, b].  A
    fan_out without the kernel area gives a 3x3 conv's weights a bound ~1.5 times b."""
    from inception_fast.reference import VARIANTS

    for variant in VARIANTS:
        ref = build_models(variant, 10, 1, 0, reference=True)["reference"]
        layers = [(n, m) for n, m in ref.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert any(m.weight[0, 0].numel() > 1 for _, m in layers), "no layer with a kernel: the check could not fail"
        for name, m in layers:
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            top = m.weight.abs().max().item()
            # (float32 draws of a bound computed in float64: one rounding, within the fp32 tolerance)
            assert 0.9 * bound < top <= bound * (1 + TOLERANCE["fp32"]), f"{variant} {name}: max |w| {top} vs b {bound}"
            assert m.bias is None or not m.bias.any(), f"{variant} {name}: bias not zero"


def test_defaults_are_the_chapters_recipe():
    """With no options the job runs the recipe its docstring states: GoogLeNet d2l on the digits,
    SGD lr 0.1, batch 128, 10 epochs at 96x96, seed 0, float32."""
    from inception_fast.train import build_parser

    args = build_parser().parse_args([])
    got = (args.data, args.variant, args.lr, args.batch_size, args.epochs, args.image_size, args.seed, args.dtype)
    assert got == ("digits", "d2l", 0.1, 128, 10, 96, 0, "float32")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["--lr", "inf"], "--lr must be a positive number, got inf"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**62 - 1, got -1"),
        (["--stop-after", "0"], "--stop-after must be at least 1, got 0"),
        (["--steps-per-epoch", "0"], "--steps-per-epoch must be at least 1, got 0"),
        (["--test-limit", "0"], "--test-limit must be at least 1, got 0"),
    ],
)
def test_counts_and_numbers_out_of_range_are_refused_before_training(tmp_path, capsys, argv, message):
    """(On top of TINY: a check left out trains a tiny run, not the default one.)"""
    with pytest.raises(SystemExit) as exc:
        train(tmp_path / "o", "--epochs", "1", *argv)
    assert exc.value.code == 2
    _one_line(capsys, message)
    assert not (tmp_path / "o").exists()


def test_out_dtype_and_process_problems_are_found_before_training(tmp_path, capsys, monkeypatch):
    """--out that is a file, or holding a directory named as any file the job writes; --dtype
    bfloat16 on a CPU without oneDNN's bfloat16 convolutions; a global batch that does not split over
    the processes; a RANK outside WORLD_SIZE or a MASTER_PORT 0 (the last two checked directly: past
    the checks a process would wait for its peers)."""
    from inception_fast.cli import UsageError
    from inception_fast.train import _check_args, _Dist, _dist_from_env, build_parser

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        train(tmp_path / "file", "--epochs", "1")
    _one_line(capsys, "exists and is not a directory")
    with pytest.raises(SystemExit):
        train(tmp_path / "file" / "o", "--epochs", "1")
    _one_line(capsys, f"{tmp_path / 'file'} is not a directory")
    with monkeypatch.context() as m:  # (as root every directory is writable: os.access says otherwise here)
        m.setattr(os, "access", lambda path, mode: path != str(tmp_path))
        with pytest.raises(SystemExit):
            train(tmp_path / "new" / "o", "--epochs", "1")
    _one_line(capsys, f"--out {tmp_path / 'new' / 'o'}: {tmp_path} is not writable")
    out = tmp_path / "o"
    for name in ("history.json", "curves.png"):
        os.makedirs(out / name)
        with pytest.raises(SystemExit):
            train(out, "--epochs", "1")
        _one_line(capsys, f"{name} there is a directory")
        os.rmdir(out / name)
    monkeypatch.setattr(onednn_backend, "bf16_supported", lambda: False)
    with pytest.raises(SystemExit):
        train(out, "--epochs", "1", "--dtype", "bfloat16", "--device", "cpu")
    _one_line(capsys, "--dtype bfloat16 on cpu trains with oneDNN's bfloat16 convolutions")
    monkeypatch.undo()
    args = build_parser().parse_args(["--batch-size", "3", "--out", str(out)])
    with pytest.raises(UsageError, match="--batch-size 3 does not split evenly over 2 processes"):
        _check_args(args, torch.device("cpu"), _Dist(0, 2))
    for rank, port, message in (("2", "29500", "RANK=2 WORLD_SIZE=2: the rank must be"), ("0", "0", "MASTER_PORT='0'")):
        for name, value in (("WORLD_SIZE", "2"), ("RANK", rank), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)):
            monkeypatch.setenv(name, value)
        with pytest.raises(UsageError, match=message):
            _dist_from_env()
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(UsageError, match="RANK='first' WORLD_SIZE='2': not integers"):
        _dist_from_env()


def test_a_checkpoint_write_that_fails_keeps_the_previous_checkpoint_and_no_temporary_file(
    tmp_path, capsys, monkeypatch
):
    """checkpoint.pt is written to a temporary file, then renamed: a write that fails (a full disk)
    leaves the checkpoint there before as it was and no temporary file, and is one line, exit 1."""
    out = tmp_path / "o"
    os.makedirs(out)
    (out / "checkpoint.pt").write_bytes(b"the previous checkpoint")

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as file:
            file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as exc:
        train(out, "--epochs", "1", "--steps-per-epoch", "1")
    assert exc.value.code == 1
    _one_line(capsys, f"error: {out / 'checkpoint.pt'}: No space left on device")
    assert (out / "checkpoint.pt").read_bytes() == b"the previous checkpoint", "a failed write damaged the checkpoint"
    assert os.listdir(out) == ["checkpoint.pt"], "a temporary file was left behind"


def test_resume_refuses_a_checkpoint_written_for_another_run(tmp_path, capsys):
    """A run stopped by --stop-after has written history.json too; every entry of its checkpoint's
    meta is compared with the resumed run's (the learning rate excepted): each one changed is
    refused, naming it; and weights holding Inf (not only NaN) are refused."""
    out = tmp_path / "o"
    assert train(out, "--epochs", "2", "--stop-after", "1", "--steps-per-epoch", "1") == 0
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())["history"]] == [1]
    good = load(out)
    keys = ("variant", "layout", "num_classes", "in_channels", "image_size", "reference", "data", "seed")
    for key in (*keys, "batch_size", "processes", "steps_per_epoch"):
        torch.save({**good, "meta": {**good["meta"], key: "other"}}, out / "checkpoint.pt")
        with pytest.raises(SystemExit):
            train(out, "--epochs", "2", "--steps-per-epoch", "1", "--resume")
        _one_line(capsys, f"was written for {key} 'other', this run has")
    inf = {k: torch.full_like(v, float("inf")) for k, v in good["models"]["fused"].items()}
    torch.save({**good, "models": {**good["models"], "fused": inf}}, out / "checkpoint.pt")
    with pytest.raises(SystemExit):
        train(out, "--epochs", "2", "--steps-per-epoch", "1", "--resume")
    _one_line(capsys, "holds NaN or Inf")


def test_evaluation_counts_every_test_image_once_in_eval_mode():
    """Test accuracy is the share of all test images predicted right, a last short batch included,
    with the model in eval mode (BatchNorm's running statistics, no dropout)."""
    from inception_fast.train import Images, _Dist, _evaluate

    class Zero(nn.Module):  # predicts class 0 for every image
        def forward(self, x):
            modes.append(self.training)
            return torch.zeros(len(x), 3)

    modes = []
    labels = torch.tensor([1, 0, 0, 2, 0, 1, 0])  # 4 zeros, 3 of them in the first 6
    data = Images(torch.zeros(7, 1, 4, 4), labels)
    model = Zero().train()
    acc = _evaluate(model, data, 4, 3, torch.device("cpu"), _Dist(0, 1), contextlib.nullcontext)
    assert acc == 4 / 7
    assert modes == [False] * 3 and model.training


def test_train_loss_and_accuracy_are_means_over_every_image_trained(tmp_path, capsys):
    """20 training images in batches of 16: an epoch is 2 steps (16 and 4 images, the last short batch
    trained) and its train loss and accuracy are means over the 20 images, each batch weighted by its
    size (--lr 1e-30 leaves the weights as built, so the test computes every batch's loss itself);
    --test-limit cuts the test images, not the training ones.  (On the CPU: the test's own forward's.)"""
    import torch.nn.functional as F
    from torch.utils.data import DistributedSampler

    from inception_fast.train import load_data

    root = _write_fmnist(tmp_path / "fm", gz=False, n_train=20)
    argv = ["--data", "fashion-mnist", "--data-dir", str(root), "--epochs", "1", "--lr", "1e-30", "--test-limit", "4"]
    assert train(tmp_path / "o", *argv, "--device", "cpu") == 0
    assert "fashion-mnist: 20 train / 4 test images" in capsys.readouterr().out
    r = json.loads((tmp_path / "o" / "history.json").read_text())["history"][0]["fused"]
    assert round(r["images_per_s"] * r["train_s"]) == 20, "not every training image was trained once"
    data = load_data("fashion-mnist", str(root))
    sampler = DistributedSampler(range(20), num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(0)
    order = list(sampler)
    model = build_models("d2l", 10, 1, 0, "torch")["fused"]
    loss = right = 0
    with torch.no_grad():
        for idx in (order[:16], order[16:]):
            x, y = data.train.batch(idx, 8)
            logits = model(x)
            loss += float(F.cross_entropy(logits, y)) * len(y)
            right += int((logits.argmax(1) == y).sum())
    assert math.isclose(r["train_loss"], loss / 20, rel_tol=TOLERANCE["fp32"]), (r["train_loss"], loss / 20)
    assert r["train_acc"] == right / 20


def test_progress_bar_counts_the_steps_on_stderr(tmp_path, capsys):
    """Without --no-progress each epoch draws a bar on stderr, full at the end: --steps-per-epoch 2
    of the digits' 90 steps of 16."""
    argv = [a for a in TINY if a != "--no-progress"]
    assert cli_main(["train", "--out", str(tmp_path / "o"), *argv, "--epochs", "1"]) == 0
    assert f"epoch 1/1 [{'#' * 24}] 2/2 loss" in capsys.readouterr().err


def test_seed_sets_initial_weights_and_shuffle(tmp_path, monkeypatch):
    """--seed draws the initial weights and each epoch's shuffle (DistributedSampler's seed)."""
    from torch.utils.data import DistributedSampler

    a, b = (build_models("d2l", 10, 1, seed)["fused"].state_dict() for seed in (0, 1))
    assert not torch.equal(flat(a, a), flat(b, a)), "the initial weights do not depend on the seed"
    orders, iterate = _record_shuffles(monkeypatch)
    assert train(tmp_path / "o", "--epochs", "1", "--seed", "1", "--steps-per-epoch", "1") == 0
    expected = {}
    for seed in (0, 1):
        sampler = DistributedSampler(range(1438), num_replicas=1, rank=0, shuffle=True, seed=seed)
        sampler.set_epoch(0)
        expected[seed] = list(iterate(sampler))
    assert expected[0] != expected[1] and orders == [expected[1]], "the shuffle does not follow --seed"


def test_digits_split_and_scale():
    """scikit-learn's 1,797 digits: a fixed 80/20 split (1,438 / 359), pixels 0-16 scaled to [0, 1]."""
    from inception_fast.train import load_data

    data = load_data("digits", None)
    assert (len(data.train), len(data.test)) == (1438, 359)
    for split in (data.train, data.test):
        assert split.images.min() == 0 and split.images.max() == 1


def test_fashion_mnist_files_that_do_not_fit_are_refused_and_pixels_are_scaled(tmp_path, capsys):
    """Pixels 0-255 come in as [0, 1]; an IDX file longer than its header says, one of another
    element type, labels outside 0-9 or fewer labels than images are each one line naming the file."""
    from inception_fast.train import load_data, read_idx

    root = _write_fmnist(tmp_path / "fm", gz=False)
    raw = read_idx(os.path.join(root, "train-images-idx3-ubyte"))
    assert raw.max() > 250
    assert torch.equal(load_data("fashion-mnist", str(root)).train.images, raw[:, None].float() / 255)
    images, labels = os.path.join(root, "t10k-images-idx3-ubyte"), os.path.join(root, "t10k-labels-idx1-ubyte")
    for path, content, message in (
        (images, _idx(torch.zeros(8, 28, 28)) + b"\0", "is longer than its header says"),
        (images, bytes([0, 0, 0x0B]) + _idx(torch.zeros(8, 28, 28))[3:], "IDX element type 0x0b, expected unsigned"),
        (labels, _idx(torch.full((8,), 10)), "label 10 outside Fashion-MNIST's 0-9"),
        (labels, _idx(torch.zeros(7)), "(7,) labels for 8 images"),
    ):
        with open(path, "rb") as f:
            kept = f.read()
        with open(path, "wb") as f:
            f.write(content)
        with pytest.raises(SystemExit):
            train(tmp_path / "o", "--data", "fashion-mnist", "--data-dir", str(root), "--epochs", "1")
        err = capsys.readouterr().err
        assert message in err and path in err and "Traceback" not in err, err
        with open(path, "wb") as f:
            f.write(kept)


def test_image_folder_split_and_class_checks(tmp_path, capsys):
    """A folder of class folders: a fixed 80/20 split (10 images: 8 train, 2 test); one class folder,
    or train/ and test/ with other classes, are refused in one line."""
    from PIL import Image

    def image(path):
        os.makedirs(path.parent, exist_ok=True)
        Image.fromarray(torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()).save(path)

    for cls in ("cat", "dog"):
        for i in range(5):
            image(tmp_path / "flat" / cls / f"{i}.png")
            image(tmp_path / "one" / "cat" / f"{i}.png")
        image(tmp_path / "split" / "train" / cls / "0.png")
    for cls in ("cat", "eel"):
        image(tmp_path / "split" / "test" / cls / "0.png")
    assert train(tmp_path / "o", "--data", "imagefolder", "--data-dir", str(tmp_path / "flat"), "--epochs", "1") == 0
    assert "imagefolder: 8 train / 2 test images, 2 classes" in capsys.readouterr().out
    for folder, message in (
        ("one", "found 1 class folder(s); training needs at least 2"),
        ("split", "train/ has classes ['cat', 'dog'], test/ ['cat', 'eel']"),
    ):
        with pytest.raises(SystemExit):
            train(tmp_path / "o", "--data", "imagefolder", "--data-dir", str(tmp_path / folder), "--epochs", "1")
        _one_line(capsys, message)


def test_a_single_training_image_batch_norm_cannot_take_is_refused(tmp_path, capsys):
    """One training image at 15x15 (last maps 1x1): no batch train-mode BatchNorm can take, one line."""
    root = _write_fmnist(tmp_path / "fm", gz=False, n_train=1)
    argv = ["--data", "fashion-mnist", "--data-dir", str(root), "--variant", "torchvision", "--epochs", "1"]
    with pytest.raises(SystemExit):
        train(tmp_path / "o", *argv, "--image-size", "15")
    _one_line(capsys, "1 training image(s) per process: too few for train-mode BatchNorm at this size")


def test_curves_plot_every_metric_of_both_models(tmp_path, monkeypatch):
    """curves.png draws each metric of the fused model and of the reference, each curve labelled."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from inception_fast.train import _plot

    labels = []
    plot = matplotlib.axes.Axes.plot

    def recording(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    metrics = {"train_loss": 2.0, "train_acc": 0.5, "test_acc": 0.25}
    history = [{"epoch": e, "fused": metrics, "reference": metrics} for e in (1, 2)]
    assert _plot(str(tmp_path / "curves.png"), history, "title") is None
    assert sorted(labels) == sorted(f"{m.replace('_', ' ')} ({n})" for m in metrics for n in ("fused", "reference"))
    assert (tmp_path / "curves.png").stat().st_size > 1000


EVALUATE_ON_TWO_RANKS = '''
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from inception_fast.train import Images, _Dist, _evaluate


class Stub(nn.Module):
    """Predicts its buffer's class for every image."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("cls", torch.tensor(0))

    def forward(self, x):
        return F.one_hot(self.cls.expand(len(x)), 2).float() + 0 * self.weight


torch.distributed.init_process_group("gloo")
rank = torch.distributed.get_rank()
model = Stub()
run = nn.parallel.DistributedDataParallel(model)
with torch.no_grad():
    model.cls.fill_(rank)  # each rank's own buffer, as training leaves BatchNorm's running statistics
data = Images(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
acc = _evaluate(run, data, 2, 2, torch.device("cpu"), _Dist(rank, 2), contextlib.nullcontext)
print(f"rank {rank}: accuracy {acc}, class {int(model.cls)}")
torch.distributed.barrier()  # both ranks done before either tears gloo down (as the train job does)
torch.distributed.destroy_process_group()
'''


def test_two_processes_evaluate_with_rank_0s_buffers(tmp_path):
    """Under DistributedDataParallel every process evaluates its share of the test images with rank
    0's buffers (BatchNorm's running statistics, which training leaves different on each rank): a
    stub that predicts its buffer's class, 0 on rank 0 and 1 on rank 1, all labels 0, scores 1.0 on
    both ranks (0.5 where rank 1 kept its own buffer)."""
    (tmp_path / "evaluate.py").write_text(EVALUATE_ON_TWO_RANKS)
    run = _two_processes(str(tmp_path / "evaluate.py"))
    for rank in (0, 1):
        assert f"rank {rank}: accuracy 1.0, class 0" in run.stdout, run.stdout
