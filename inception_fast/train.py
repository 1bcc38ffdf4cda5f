"""The training job: ``python -m inception_fast train``.

By default it runs the Dive-into-Deep-Learning chapter's recipe on the handwritten digits that
ship with scikit-learn (no download): GoogLeNet variant "d2l" (fused), SGD with lr 0.1, batch
128, 10 epochs, images resized to 96x96, Xavier-uniform conv and linear weights as the
chapter's training loop sets them.  Other data: Fashion-MNIST's IDX files (``--data
fashion-mnist --data-dir DIR``) or an ImageFolder directory (``--data imagefolder``).

Per epoch it shows a progress bar (stderr) and prints train loss, train accuracy, test
accuracy, training images/s and elapsed time; it writes ``checkpoint.pt`` (atomically: a
temporary file, then os.replace) and ``history.json`` into ``--out``, and at the end
``curves.png`` (needs matplotlib).  ``--resume`` continues from ``--out``'s checkpoint up to
``--epochs`` and ends with the weights an uninterrupted run reaches: the shuffling of epoch e
depends only on (seed, e), and the checkpoint holds the optimizer and every process's RNG
state.  Bit for bit on CPU; on CUDA the resumed process measures its kernel choices again
(backend "auto", the stem) and cuDNN may pick other algorithms, so there the weights agree
within the tolerance table (INCEPTION_FAST_AUTO=static and
torch.use_deterministic_algorithms(True) narrow that).
``--reference`` trains the unfused reference from the same initial weights on the same batches,
side by side.

Data-parallel: under ``torchrun --nproc_per_node N`` it trains with DistributedDataParallel
(gloo on CPU, NCCL on CUDA) and a DistributedSampler; ``--batch-size`` is the global batch,
split evenly over the processes, so N processes train the same recipe as one (the same weights
for the d2l variant; BatchNorm's batch statistics are per process, its running statistics rank
0's, and dropout masks per process).  Only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import pickle
import platform
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import FusedGoogLeNet, GoogLeNet
from .backends import onednn_backend
from .choices import ContextLost
from .cli import (
    HelpFormatter,
    UsageError,
    check_backend,
    check_environment,
    check_image_size,
    check_input_size,
    is_allocation_failure,
    naming_file,
    os_error_line,
    out_of_memory,
    resolve_device,
)
from .reference import VARIANTS, variant_layout

__all__ = ["main", "build_models", "load_data", "TrainData", "read_idx"]

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
CURVES = "curves.png"
FORMAT = "inception_fast.train/1"
DATA_CHOICES = ("digits", "fashion-mnist", "imagefolder")
FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# -- data ------------------------------------------------------------------------------------------


@dataclass
class Images:
    """Images held in memory at their native size ([N, C, h, w] float in [0, 1]) and labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: list, size: int) -> tuple:
        x = self.images[idx]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x, self.labels[idx]


@dataclass
class FolderImages:
    """Image files with labels, read and resized when a batch needs them (RGB, [0, 1])."""

    samples: list  # [(path, label)]

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, idx: list, size: int) -> tuple:
        from PIL import Image

        xs = []
        for i in idx:
            path, _ = self.samples[i]
            try:
                with Image.open(path) as img:
                    if img.mode.startswith("I;16"):
                        # 16-bit greyscale: scaled to 8 bits here (convert("RGB") would clip at 255).
                        img = img.convert("I").point(lambda v: v / 257).convert("L")
                    elif img.mode in ("I", "F"):
                        raise UsageError(
                            f"cannot read image {path}: its pixels are {img.mode} (32-bit or floating-point), "
                            "whose range this job cannot know; convert it to 8 or 16 bits"
                        )
                    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
                    xs.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3))
            except UsageError:
                raise
            except Exception as exc:
                raise UsageError(f"cannot read image {path}: {exc}") from None
        x = torch.stack(xs).permute(0, 3, 1, 2).float().div_(255)
        return x, torch.tensor([self.samples[i][1] for i in idx])


@dataclass
class TrainData:
    name: str
    train: object
    test: object
    num_classes: int
    channels: int


def read_idx(path: str) -> torch.Tensor:
    """An IDX file (gzipped or not) of unsigned bytes as a uint8 tensor; UsageError naming the file
    when it is missing, not IDX, not bytes, or shorter or longer than its header says."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError(f"missing file {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read {path}: {str(exc) or type(exc).__name__}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UsageError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise UsageError(f"{path}: IDX element type 0x{data[2]:02x}, expected unsigned bytes (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UsageError(f"{path} is truncated (its header is incomplete)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if math.prod(dims) == 0:
        raise UsageError(f"{path} holds no data (header {dims})")
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise UsageError(f"{path} is {what}: {len(data)} bytes, header {dims} needs {expected}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*dims)


def _find_fmnist_file(root: str, stem: str) -> str:
    for folder in (os.path.join(root, "FashionMNIST", "raw"), root):
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    raise UsageError(f"--data-dir {root}: no {stem}[.gz] in {os.path.join(root, 'FashionMNIST', 'raw')} or in {root}")


def load_fashion_mnist(root: str) -> TrainData:
    paths = {key: _find_fmnist_file(root, stem) for key, stem in FMNIST_FILES.items()}
    tensors = {key: read_idx(path) for key, path in paths.items()}
    splits = []
    for part in ("train", "test"):
        images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
        if images.dim() != 3:
            raise UsageError(
                f"{paths[part + '_images']}: expected 3-D images (N, H, W), got shape {tuple(images.shape)}"
            )
        if labels.dim() != 1 or len(labels) != len(images):
            raise UsageError(f"{paths[part + '_labels']}: {tuple(labels.shape)} labels for {len(images)} images")
        if len(labels) and int(labels.max()) > 9:
            raise UsageError(f"{paths[part + '_labels']}: label {int(labels.max())} outside Fashion-MNIST's 0-9")
        splits.append(Images(images[:, None].float().div_(255), labels.long()))
    return TrainData("fashion-mnist", splits[0], splits[1], 10, 1)


def load_digits_data() -> TrainData:
    """scikit-learn's 1,797 8x8 digits, 16 grey levels; a fixed 80/20 split (independent of --seed)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UsageError(
            "--data digits needs scikit-learn: pip install 'inception_fast[train]' (or pip install scikit-learn)"
        ) from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return TrainData("digits", Images(images[train], labels[train]), Images(images[test], labels[test]), 10, 1)


def _folder_samples(root: str) -> tuple:
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(root)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        raise UsageError(f"--data-dir {root}: {exc}") from None
    return folder.samples, folder.classes


def load_image_folder(root: str) -> TrainData:
    """Classes from the sub-folders.  With ``train/`` and ``test/`` (or ``val/``) sub-directories
    those are the splits, else a fixed 80/20 split of the whole folder."""
    test_dir = next((os.path.join(root, d) for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if subdirs == ["train"]:
        raise UsageError(
            f"--data-dir {root}: holds train/ but no test/ or val/ beside it; add one, or put the class "
            f"folders directly in {root} (a fixed 80/20 split)"
        )
    if os.path.isdir(os.path.join(root, "train")) and test_dir:
        train, classes = _folder_samples(os.path.join(root, "train"))
        test, test_classes = _folder_samples(test_dir)
        if test_classes != classes:
            raise UsageError(
                f"--data-dir {root}: train/ has classes {classes}, {os.path.basename(test_dir)}/ {test_classes}"
            )
    else:
        samples, classes = _folder_samples(root)
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = max(1, len(samples) // 5)
        test, train = [samples[i] for i in order[:n_test]], [samples[i] for i in order[n_test:]]
    if len(classes) < 2:
        raise UsageError(f"--data-dir {root}: found {len(classes)} class folder(s); training needs at least 2")
    if not train:
        raise UsageError(f"--data-dir {root}: no training images")
    return TrainData("imagefolder", FolderImages(train), FolderImages(test), len(classes), 3)


def _first(split, n: int):
    if isinstance(split, Images):
        return Images(split.images[:n], split.labels[:n])
    return FolderImages(split.samples[:n])


def load_data(name: str, data_dir: Optional[str]) -> TrainData:
    if name == "digits":
        return load_digits_data()
    if not data_dir:
        raise UsageError(f"--data {name} needs --data-dir DIR")
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir} is not a directory")
    return load_fashion_mnist(data_dir) if name == "fashion-mnist" else load_image_folder(data_dir)


# -- models ----------------------------------------------------------------------------------------


def build_models(
    variant: str, num_classes: int, in_channels: int, seed: int, backend: str = "auto", reference: bool = False
) -> dict:
    """{"fused": FusedGoogLeNet[, "reference": GoogLeNet]} with the same initial weights: the
    chapter's Xavier-uniform conv and linear weights (zero biases), drawn from ``seed``; each
    variant's own dropout (none in the d2l network, as in the chapter)."""
    torch.manual_seed(seed)
    ref = GoogLeNet(num_classes, variant=variant, in_channels=in_channels, init_weights=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_out, fan_in = m.weight.shape[0], m.weight[0].numel()
                fan_out *= m.weight[0, 0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
    models = {"fused": FusedGoogLeNet.from_torchvision(ref, backend=backend).train()}
    if reference:
        models["reference"] = ref.train()
    return models


def check_train_dtype(dtype: str, device: torch.device) -> None:
    """``--dtype bfloat16`` trains under autocast: on CUDA, and on a CPU where oneDNN has bfloat16
    convolutions (elsewhere ATen would emulate them, slower than float32); a UsageError that says
    so where not."""
    if dtype != "bfloat16" or device.type != "cpu" or onednn_backend.bf16_supported():
        return
    raise UsageError(
        "--dtype bfloat16 on cpu trains with oneDNN's bfloat16 convolutions, which need AVX-512 (BW, VL "
        "and DQ) or AVX-NE-CONVERT; this CPU lacks them: use --dtype float32"
    )


def batch_norm_refusal(variant: str, num_classes: int, in_channels: int, size: int, batch: int) -> Optional[str]:
    """Why GoogLeNet(variant) in train mode cannot take a batch of ``batch`` images of side ``size``
    (BatchNorm with batch statistics needs more than one value per channel: a batch of one whose
    last maps are 1x1), else None.  Runs the network on the meta device: no memory, no arithmetic."""
    with torch.device("meta"):
        model = GoogLeNet(num_classes, variant=variant, in_channels=in_channels, init_weights=False)
    try:
        with torch.no_grad():
            model.train()(torch.empty(batch, in_channels, size, size, device="meta"))
    except ValueError as exc:
        return str(exc)
    return None


# -- the job ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inception_fast train",
        description=__doc__.split("\n\n")[1],
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--data",
        choices=DATA_CHOICES,
        default="digits",
        help="digits: scikit-learn's (offline); fashion-mnist: IDX files (gzipped or not) in "
        "DIR/FashionMNIST/raw or DIR; imagefolder: DIR/<class>/<image> (or DIR/train and DIR/test)",
    )
    p.add_argument("--data-dir", default=None, help="the directory for --data fashion-mnist / imagefolder")
    p.add_argument("--variant", choices=VARIANTS, default="d2l", help="which GoogLeNet (see inception_fast.reference)")
    p.add_argument(
        "--backend",
        default="auto",
        help="the fused model's backend: auto, or one inception_fast.available_backends() lists",
    )
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="bfloat16: autocast (on CPU where oneDNN has bfloat16 convolutions)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the trained model(s)")
    p.add_argument("--epochs", type=int, default=10, help="train up to this epoch (with --resume: in all)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    p.add_argument("--batch-size", type=int, default=128, help="global batch (split over torchrun's processes)")
    p.add_argument("--image-size", type=int, default=96, help="images are resized to this square size")
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffling and dropout")
    p.add_argument("--out", default="train_out", help="directory for checkpoint.pt, history.json, curves.png")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint up to --epochs")
    p.add_argument(
        "--reference",
        action="store_true",
        help="also train the unfused reference (same initial weights, same batches), side by side",
    )
    p.add_argument(
        "--steps-per-epoch", type=int, default=None, help="at most this many steps per epoch (smoke runs, tests)"
    )
    p.add_argument(
        "--test-limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on the first N test images only (smoke runs, tests)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="K",
        help="stop after epoch K as if interrupted (to try --resume)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _resolve_device(arg: Optional[str], dist: _Dist) -> torch.device:
    # Under torchrun a bare "cuda" is each process's own GPU; an explicit index would put several
    # processes on one.
    local = int(os.environ.get("LOCAL_RANK", dist.rank)) if dist.world > 1 else None
    device = resolve_device(arg, "training", default_cuda_index=local)
    if dist.world > 1 and device.type == "cuda" and ":" in (arg or ""):
        raise UsageError(
            f"--device {arg}: under torchrun each process takes the GPU of its LOCAL_RANK; pass --device cuda"
        )
    return device


def _check_args(args, device: torch.device, dist: _Dist) -> None:
    check_environment()
    for name in ("epochs", "batch_size", "image_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0 or not math.isfinite(args.lr):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if not 0 <= args.seed < 2**62:
        raise UsageError(f"--seed must be an integer from 0 to 2**62 - 1, got {args.seed}")
    for name in ("steps_per_epoch", "stop_after", "test_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.batch_size % dist.world:
        raise UsageError(f"--batch-size {args.batch_size} does not split evenly over {dist.world} processes")
    check_train_dtype(args.dtype, device)
    args.backend = check_backend(args.backend, device)
    check_image_size(args.image_size, args.variant)
    check_input_size(
        args.batch_size, args.image_size, f"--batch-size {args.batch_size} at --image-size {args.image_size}"
    )
    _check_out(args.out)


def _check_out(out: str) -> None:
    """Fails now, not after an epoch, where --out cannot take the files the job writes."""
    if not out.strip():
        raise UsageError("--out: empty path")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a directory")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):  # the directory, or the nearest one above it that exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {parent} is not writable")
    for name in (CHECKPOINT, HISTORY, CURVES):
        if os.path.isdir(os.path.join(out, name)):
            raise UsageError(f"--out {out}: {name} there is a directory; the job writes a file of that name")


class _Bar:
    """A one-line progress bar on stderr, redrawn in place."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled, self.t0 = label, max(total, 1), enabled, time.perf_counter()

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        filled = int(24 * done / self.total)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (24 - filled)}] {done}/{self.total} {note} "
            f"{time.perf_counter() - self.t0:6.1f}s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _atomic_write(path: str, write) -> None:
    """``write(tmp)``, then ``tmp`` renamed to ``path``; an OSError names a file (a full disk fails
    in a write, whose error names none)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise naming_file(exc, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _rng_states(device: torch.device, dist: _Dist) -> list:
    """Every process's RNG state, by rank (gathered to all; rank 0 writes them)."""
    if dist.world == 1:
        return [_rng_state(device)]
    states = [None] * dist.world
    torch.distributed.all_gather_object(states, {k: v.cpu() for k, v in _rng_state(device).items()})
    return states


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _damaged_record(path: str) -> Optional[str]:
    """What fails its CRC-32 in a checkpoint (torch.save writes a zip archive with a checksum per
    record, which torch.load does not check: a damaged tensor would load as other numbers), else
    None.  Files that are not zip archives are left to torch.load."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError):  # not a zip archive, or unreadable: torch.load says why
        return None
    except Exception as exc:  # a corrupt member header or compressed data
        return " ".join(str(exc).split())[:160] or type(exc).__name__
    return None if bad is None else f"record {bad} fails its checksum"


def _load_checkpoint(path: str, args, data: TrainData, dist: _Dist) -> dict:
    if not os.path.exists(path):
        raise UsageError(f"--resume: no checkpoint {path}; run without --resume to start")
    if not os.path.isfile(path):
        raise UsageError(f"--resume: {path} is not a file")
    damaged = _damaged_record(path)
    if damaged is not None:
        raise UsageError(f"--resume: {path} is damaged ({damaged}); it cannot be resumed from")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if isinstance(exc, (pickle.UnpicklingError, KeyError, EOFError)):
            # torch's message is about weights_only, or a bare key of the unpickler's: not about the file
            why = "it does not unpickle"
        else:
            why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UsageError(f"--resume: cannot read {path}: not a PyTorch checkpoint file ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"--resume: {path} is not a checkpoint of this job")
    meta = ckpt.get("meta")
    missing = [k for k in ("epoch", "meta", "models", "optimizers", "rng", "history") if k not in ckpt]
    if missing or not isinstance(meta, dict):
        raise UsageError(f"--resume: {path} is damaged: missing {', '.join(missing) or 'meta'}")
    want = _meta(args, data, dist)
    del want["lr"]  # a resumed run may change the learning rate
    for key, value in want.items():
        if key == "steps_per_epoch" and key not in meta:  # (a checkpoint written before it was recorded)
            continue
        if key == "layout" and key not in meta:  # written before it was recorded: the layout then
            if meta.get("variant") != "paper":  # (only the paper variant's has changed since)
                continue
            raise UsageError(
                f"--resume: {path} was written for the paper variant as it was before its maxpool4 "
                "became 3x3/2 and its dropout 0.4 (as in the paper); this run's network differs: start a new run"
            )
        if meta.get(key) != value:
            raise UsageError(f"--resume: {path} was written for {key} {meta.get(key)!r}, this run has {value!r}")
    return ckpt


def _resume(ckpt: dict, path: str, models: dict, optimizers: dict, lr: float, device, dist: _Dist) -> tuple:
    """Loads the checkpoint's models, optimizers and this process's RNG state; returns (history,
    epoch done).  Contents that do not fit (a damaged or edited file) are a UsageError naming it."""
    try:
        epoch, history, rng = ckpt["epoch"], ckpt["history"], ckpt["rng"]
        if type(epoch) is not int or epoch < 0 or not isinstance(history, list):
            raise ValueError(f"epoch {epoch!r}, history of type {type(history).__name__}")
        for record in history:  # what history.json and the plot read from each epoch's record
            if not (
                isinstance(record, dict)
                and type(record.get("epoch")) is int
                and all(isinstance(record.get(name), dict) for name in models)
                and all(
                    isinstance(record[name].get(metric), (int, float))
                    for name in models
                    for metric in ("train_loss", "train_acc", "test_acc")
                )
            ):
                raise ValueError(f"a history record is not an epoch's: {str(record)[:80]}")
        if not isinstance(rng, list) or len(rng) <= dist.rank:
            held = len(rng) if isinstance(rng, list) else 0
            raise ValueError(f"it holds RNG states for {held} process(es), this is rank {dist.rank}")
        for name in models:
            models[name].load_state_dict(ckpt["models"][name])
            optimizers[name].load_state_dict(ckpt["optimizers"][name])
            for group in optimizers[name].param_groups:
                group["lr"] = lr
        _set_rng_state(rng[dist.rank], device)
        for name, model in models.items():
            bad = next(
                (k for k, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()), None
            )
            if bad is not None:
                raise ValueError(f"the {name} model's {bad} holds NaN or Inf (a run that diverged)")
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        what = f"no entry {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:240]
        raise UsageError(f"--resume: {path} is damaged or not this run's: {what}") from None
    return history, epoch


def _meta(args, data: TrainData, dist: _Dist) -> dict:
    """What a checkpoint was written for; --resume refuses one written for anything else (the
    resumed run would not be the run it continues)."""
    return {
        "variant": args.variant,
        "layout": variant_layout(args.variant),  # its pools and dropout (the paper's changed once)
        "num_classes": data.num_classes,
        "in_channels": data.channels,
        "image_size": args.image_size,
        "reference": args.reference,
        "data": data.name,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "processes": dist.world,
        "steps_per_epoch": args.steps_per_epoch,
        "lr": args.lr,
    }


def _runs(model: nn.Module) -> str:
    """The fused model's backend as training runs it: auto's "onednn" on CPU is an inference form,
    so training runs the torch backend's op (FusedInception.fused_forward) and evaluation oneDNN's."""
    backend = model.backend
    if backend == "onednn" and model.requested_backend == "auto":
        return "torch op in training, onednn in evaluation"
    return backend


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def _all_sum(values: list, device: torch.device, dist: _Dist) -> list:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.world > 1:
        torch.distributed.all_reduce(t)
    return t.tolist()


def _evaluate(model: nn.Module, data, size: int, batch: int, device, dist: _Dist, autocast) -> float:
    """Test accuracy; each process takes every world-th image and the counts are summed.  Under
    DistributedDataParallel the processes first take rank 0's buffers (BatchNorm's running
    statistics), as the wrapper's first forward after training would, then evaluate the module
    itself: that forward is a collective, which a process with no test image would never join."""
    idx = list(range(dist.rank, len(data), dist.world))
    correct = 0
    wrapper = getattr(model, "_orig_mod", model)  # (under --compile, the module compiled is the wrapper)
    if dist.world > 1 and isinstance(wrapper, nn.parallel.DistributedDataParallel):
        model = wrapper.module
        with torch.no_grad():
            for buf in model.buffers():
                synced = buf.detach().clone()
                torch.distributed.broadcast(synced, 0)
                buf.copy_(synced)  # an in-place op: the fused modules see the new statistics
    model.eval()
    with torch.no_grad(), autocast():
        for start in range(0, len(idx), batch):
            x, y = data.batch(idx[start : start + batch], size)
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    model.train()
    right, total = _all_sum([correct, len(idx)], device, dist)
    return right / max(total, 1)


def _plot(path: str, history: list, title: str) -> Optional[str]:
    """Writes the curves; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no curves.png; history.json holds the numbers"
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    styles = {"fused": "-", "reference": "--"}
    for model in [m for m in ("fused", "reference") if history and m in history[0]]:
        for metric, color in (("train_loss", "C0"), ("train_acc", "C1"), ("test_acc", "C2")):
            ax.plot(
                epochs,
                [h[model][metric] for h in history],
                styles[model],
                color=color,
                label=f"{metric.replace('_', ' ')} ({model})",
            )
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except UsageError as exc:
        parser.error(str(exc))  # one line, exit code 2
    except ContextLost as exc:  # a measured candidate lost the GPU's context: what it says, in one line
        parser.exit(1, f"error: {exc}\n")
    except (RuntimeError, MemoryError) as exc:
        if not is_allocation_failure(exc):
            raise
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        parser.exit(1, f"error: {out_of_memory(device, args.batch_size, args.image_size, exc)}\n")
    except OSError as exc:  # writing --out's files: a full disk, no permission
        if exc.errno is None or not exc.filename:
            raise
        parser.exit(1, os_error_line(exc))
    return 2


def _dist_from_env() -> _Dist:
    """This process's rank and the process count, from torchrun's environment (none: one process)."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UsageError(
            f"RANK={os.environ.get('RANK')!r} WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: not integers"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} WORLD_SIZE={world}: the rank must be from 0 to WORLD_SIZE - 1")
    if world > 1 and not torch.distributed.is_initialized():
        unset = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if unset:
            raise UsageError(
                f"WORLD_SIZE={world} but {' and '.join(unset)} unset: start several processes with "
                "torchrun --nproc-per-node N -m inception_fast train ..."
            )
        port = os.environ["MASTER_PORT"]
        try:
            number = int(port)  # as torch's rendezvous reads it
        except ValueError:
            number = 0
        if not 0 < number < 65536:
            raise UsageError(f"MASTER_PORT={port!r}: not a port number (1 to 65535)")
    return _Dist(rank, world)


def _run(args) -> int:
    dist = _dist_from_env()
    device = _resolve_device(args.device, dist)
    _check_args(args, device, dist)
    if dist.world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # before NCCL starts: one GPU per process
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    existed = os.path.exists(args.out)
    try:
        rc = _train(args, device, dist)  # an exception leaves the group as it is: a peer may be in a collective
    except BaseException:
        if dist.main and not existed:  # a run that failed before writing a file (an unreadable image) leaves
            with contextlib.suppress(OSError):  # no empty --out behind (rmdir takes an empty folder only)
                os.rmdir(args.out)
        raise
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank done (rank 0's last checkpoint written) before any tears down
        torch.distributed.destroy_process_group()
    return rc


def _train(args, device: torch.device, dist: _Dist) -> int:
    data = load_data(args.data, args.data_dir)
    if args.test_limit is not None:
        data.test = _first(data.test, args.test_limit)
    ckpt_path = os.path.join(args.out, CHECKPOINT)
    ckpt = _load_checkpoint(ckpt_path, args, data, dist) if args.resume else None
    models = build_models(args.variant, data.num_classes, data.channels, args.seed, args.backend, args.reference)
    if dist.world > 1:  # every process built the same weights; from here on each draws its own dropout masks
        torch.manual_seed(args.seed + 1_000_003 * dist.rank)
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=args.lr) for name, m in models.items()}
    history, start = [], 0
    if ckpt is not None:
        history, start = _resume(ckpt, ckpt_path, models, optimizers, args.lr, device, dist)
    elif dist.main and os.path.exists(ckpt_path):
        print(f"note: {ckpt_path} exists; starting afresh (--resume continues from it)")
    runners = {}
    for name, model in models.items():
        model.to(device)
        run = model
        if dist.world > 1:
            run = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if args.compile:
            run = torch.compile(run)
        runners[name] = run
    use_bf16 = args.dtype == "bfloat16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    sampler = torch.utils.data.DistributedSampler(
        range(len(data.train)), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=args.seed
    )
    local_batch = args.batch_size // dist.world
    steps = math.ceil(len(sampler) / local_batch)
    if args.steps_per_epoch:
        steps = min(steps, args.steps_per_epoch)
    steps, dropped = _steps_batch_norm_takes(args, data, local_batch, len(sampler), steps)
    if dist.main:
        names = " and ".join(f"{n} ({_runs(_unwrap(runners[n])) if n == 'fused' else 'unfused'})" for n in runners)
        span = f"epochs {start + 1}-{args.epochs}" if start < args.epochs else f"{args.epochs} epochs"
        print(
            f"train: GoogLeNet {args.variant} {names} on {device}, {args.dtype}; {data.name}: "
            f"{len(data.train)} train / {len(data.test)} test images, {data.num_classes} classes, at "
            f"{args.image_size}x{args.image_size}; SGD lr {args.lr}, batch {args.batch_size}"
            f"{f' over {dist.world} processes' if dist.world > 1 else ''}, {span}, "
            f"seed {args.seed}; out {args.out}",
            flush=True,
        )
        if dropped:
            print(f"note: each epoch's last batch ({dropped} image) is dropped: train-mode BatchNorm cannot take it")
        repeated = len(sampler) * dist.world - len(data.train)
        if repeated:
            print(
                f"note: the {len(data.train)} training images do not divide among {dist.world} processes: "
                f"each epoch repeats {repeated} of them to fill the last batch (DistributedSampler)"
            )
        if start >= args.epochs:
            print(f"{ckpt_path} already holds epoch {start} of {args.epochs}: nothing to train")
        elif args.stop_after is not None and start >= args.stop_after:
            print(f"{ckpt_path} already holds epoch {start}, --stop-after {args.stop_after}: nothing to train")
    if start < args.epochs and args.stop_after is not None and start >= args.stop_after:
        return 0
    if dist.main:  # every check passed: a run that fails them leaves no empty directory behind
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {args.out}: cannot create it ({exc.strerror or exc})") from None
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for epoch in range(start, args.epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)
        sums = {name: [0.0, 0.0, 0.0] for name in runners}  # loss*n, correct, n
        seconds = {name: 0.0 for name in runners}
        t_epoch = time.perf_counter()
        bar = _Bar(f"epoch {epoch + 1}/{args.epochs}", steps, dist.main and not args.no_progress)
        for step in range(steps):
            idx = order[step * local_batch : (step + 1) * local_batch]
            x, y = data.train.batch(idx, args.image_size)
            x, y = x.to(device), y.to(device)
            for name, run in runners.items():
                sync()
                t0 = time.perf_counter()
                with autocast():
                    logits = run(x)
                    loss = F.cross_entropy(logits, y)
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
                sync()
                seconds[name] += time.perf_counter() - t0
                s = sums[name]
                s[0] += float(loss.detach()) * len(y)
                s[1] += int((logits.argmax(1) == y).sum())
                s[2] += len(y)
            bar.update(step + 1, f"loss {sums['fused'][0] / max(sums['fused'][2], 1):.4f}")
        bar.close()
        record = {"epoch": epoch + 1}
        for name, run in runners.items():
            loss_sum, correct, count = _all_sum(sums[name], device, dist)
            test_acc = _evaluate(run, data.test, args.image_size, local_batch, device, dist, autocast)
            record[name] = {
                "train_loss": loss_sum / count,
                "train_acc": correct / count,
                "test_acc": test_acc,
                "images_per_s": count / max(seconds[name], 1e-9),
                "train_s": seconds[name],
            }
        record["elapsed_s"] = time.perf_counter() - t_epoch
        history.append(record)
        rng = _rng_states(device, dist)  # every process takes part
        if dist.main:
            for i, name in enumerate(runners):
                r = record[name]
                head = f"epoch {epoch + 1:>3}/{args.epochs}" if i == 0 else " " * (len(str(args.epochs)) + 10)
                print(
                    f"{head} {name:<9} train loss {r['train_loss']:.4f}  train acc {r['train_acc']:.3f}  "
                    f"test acc {r['test_acc']:.3f}  {r['images_per_s']:8.1f} img/s  "
                    f"{record['elapsed_s'] if i == 0 else r['train_s']:7.1f} s{'' if i == 0 else ' training'}",
                    flush=True,
                )
            state = {
                "format": FORMAT,
                "epoch": epoch + 1,
                "meta": _meta(args, data, dist),
                "models": {n: _unwrap(r).state_dict() for n, r in runners.items()},
                "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                "rng": rng,
                "history": history,
            }
            _atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
            _write_history(args, history, device, dist)
        if args.stop_after is not None and epoch + 1 >= args.stop_after and epoch + 1 < args.epochs:
            if dist.main:
                print(f"stopped after epoch {epoch + 1} (--stop-after); --resume continues")
            return 0
    if dist.main:
        _write_history(args, history, device, dist)
        size = f"{args.image_size}x{args.image_size}"
        title = f"GoogLeNet {args.variant}, {data.name} {size}, lr {args.lr}, batch {args.batch_size}"
        why = _plot(os.path.join(args.out, CURVES), history, title)
        written = [os.path.join(args.out, CURVES), os.path.join(args.out, HISTORY)]
        if start < args.epochs:  # (a resumed run with nothing to train keeps its checkpoint as it was)
            written.append(ckpt_path)
        print(why or f"wrote {', '.join(written)}")
    return 0


def _steps_batch_norm_takes(args, data: TrainData, local_batch: int, samples: int, steps: int) -> tuple:
    """(the steps per epoch, the size of a last batch dropped or 0): a last short batch that
    train-mode BatchNorm cannot take (one image whose last maps are 1x1) is dropped, as
    DataLoader's drop_last would; a UsageError where no full batch can be taken."""
    why = batch_norm_refusal(args.variant, data.num_classes, data.channels, args.image_size, local_batch)
    if why is not None:
        raise UsageError(
            f"--batch-size {args.batch_size} ({local_batch} per process) at --image-size {args.image_size}: "
            f"{why}; use a larger batch or image size"
        )
    last = samples - (steps - 1) * local_batch
    if 0 < last < local_batch and batch_norm_refusal(
        args.variant, data.num_classes, data.channels, args.image_size, last
    ):
        if steps == 1:
            raise UsageError(f"{samples} training image(s) per process: too few for train-mode BatchNorm at this size")
        return steps - 1, last
    return steps, 0


def _write_history(args, history: list, device: torch.device, dist: _Dist) -> None:
    doc = {
        "args": vars(args),
        "device": str(device),
        "processes": dist.world,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "history": history,
    }
    path = os.path.join(args.out, HISTORY)

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)

    _atomic_write(path, write)
