"""What the package picked while a benchmark ran: the Triton autotuners' configs and the
measured choices (backend "auto" per block shape, the stem's conv1, conv-ReLU, the max pools, the
pools folded into the next block, the head, and any other).

``measured_choices`` lists every ``inception_fast.choices.MeasuredChoice`` found at module level
in the loaded ``inception_fast`` modules (``choosers``), so a choice added to the package shows up
in the benchmark report without edits here."""

from __future__ import annotations

import sys
from typing import Optional

import torch

from benchmarks.helpers.settings import DTYPES, STAGES


def _triton_common():
    return sys.modules.get("inception_fast.backends.triton._common")  # never imports triton itself


def triton_tuning_mark() -> int:
    """A mark in the Triton autotuning log (see triton_tuning_since)."""
    kernels = _triton_common()
    return kernels.tuning_count() if kernels is not None else 0


def triton_tuning_since(mark: int) -> list:
    """The Triton autotuners' choices (and per-config µs where they benchmarked) made since
    ``mark``: inception_fast.backends.triton._common.tuning_log() entries (the log keeps the most
    recent ones only, see its TUNING_LOG_FACTOR)."""
    kernels = _triton_common()
    if kernels is None:
        return []
    new = kernels.tuning_count() - mark
    return kernels.tuning_log()[-new:] if new > 0 else []


def auto_choices(dtype: str, batch: int) -> dict:
    """{backend: number of block shapes} that backend="auto" chose at this dtype and batch."""
    from inception_fast import choices

    counts: dict = {}
    for key, choice in choices.AUTO.choices().items():
        if key.dtype == DTYPES[dtype] and key.shape[0] == batch:
            counts[choice.name] = counts.get(choice.name, 0) + 1
    return counts


def stem_choice(model, x: torch.Tensor) -> Optional[dict]:
    """How FusedGoogLeNet ``model`` ran its first conv on input ``x``: the measured variant and the
    µs of each (None where nothing was measured, e.g. on CPU)."""
    from inception_fast import choices

    choice = choices.STEM_CHOICE.choices().get(model.stem_choice_key(x))
    if choice is None:
        return None
    # conv2 and conv3 (ATen, cuDNN's fused conv-bias-ReLU or Triton, see
    # inception_fast.choices.CONV_RELU_CHOICE) at this batch and dtype.
    convs = [
        {
            "weight": list(key.weight),
            "chosen": c.name,
            "us": {k: v * 1e6 for k, v in c.seconds.items()},
            "errors": c.errors,
            "stored": c.stored,  # read from the choice store: measured by an earlier process, no times here
        }
        for key, c in choices.CONV_RELU_CHOICE.choices().items()
        if key.device == str(x.device) and key.dtype == x.dtype and key.shape[0] == x.shape[0]
    ]
    # The max pools, the pools folded into the next block's launch 1 (FOLD_CHOICE: "separate" or
    # "folded") and the eval-mode head (POOL_CHOICE or on CPU CPU_POOL_CHOICE, HEAD_CHOICE) at this batch
    # and dtype, each named by its input shape.
    stages = [
        {
            "stage": stage,
            "shape": list(key.shape),
            "chosen": c.name,
            "us": {k: v * 1e6 for k, v in c.seconds.items()},
            "errors": c.errors,
            "stored": c.stored,  # read from the choice store: measured by an earlier process, no times here
        }
        for stage, chooser in (
            ("max pool", choices.POOL_CHOICE),
            ("max pool", choices.CPU_POOL_CHOICE),
            ("max pool + block", choices.FOLD_CHOICE),
            ("blocks chained", choices.CHAIN_CHOICE),
            ("head", choices.HEAD_CHOICE),
        )
        for key, c in chooser.choices().items()
        if key.device == str(x.device) and key.dtype == x.dtype and key.shape[0] == x.shape[0]
    ]
    return {
        "chosen": choice.name,
        "us": {k: v * 1e6 for k, v in choice.seconds.items()},
        "errors": choice.errors,
        "stored": choice.stored,
        "conv_relu": convs,
        "stages": stages,
    }


def choosers() -> dict:
    """{name: MeasuredChoice} of every MeasuredChoice bound at module level in the loaded
    ``inception_fast`` modules (inception_fast.choices first, so a re-export keeps its own name)."""
    from inception_fast.choices import MeasuredChoice

    names = sorted(
        (n for n, m in list(sys.modules.items()) if m is not None and n.split(".")[0] == "inception_fast"),
        key=lambda n: (n != "inception_fast.choices", n),
    )
    found, seen = {}, set()
    for mod_name in names:
        for attr, value in list(vars(sys.modules[mod_name]).items()):
            if isinstance(value, MeasuredChoice) and id(value) not in seen:
                seen.add(id(value))
                found[attr if attr not in found else f"{mod_name}.{attr}"] = value
    return found


def _jsonable(value):
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _same_device(key_device, device) -> bool:
    """Whether a key's device string names ``device`` ("cuda:0" is "cuda" when no index is asked)."""
    try:
        d, want = torch.device(key_device), torch.device(device)
    except (RuntimeError, TypeError):
        return False
    return d.type == want.type and (want.index is None or d.index in (None, want.index))


def _where(shape, image_size: Optional[int], weight=None, w3=None) -> str:
    """The blocks and stages whose input is (C, H, W) = shape[1:] at ``image_size`` ("" if none);
    a key's conv ``weight`` shape, where it has one, tells conv2 from conv3 (the same input), and a
    block key's 3x3 weight ``w3`` (its dimensions in any order) tells 4b, 4c and 4d apart."""
    if image_size is None or not isinstance(shape, tuple) or len(shape) != 4:
        return ""
    from benchmarks.helpers.shapes import block_shapes, stage_shapes

    chw = tuple(shape[1:])
    blocks = block_shapes(image_size)
    stages = stage_shapes(image_size)
    names = [
        n
        for n in STAGES
        if stages[n].input_chw == chw
        and (weight is None or stages[n].conv_weight is None or stages[n].conv_weight == tuple(weight))
    ]
    for n, b in blocks.items():
        if n == "stem" or b.input_chw != chw:
            continue
        if w3 is not None and len(b.convs) > 2:
            c3 = b.convs[2]
            if sorted(w3) != sorted((c3.cout, c3.cin // c3.groups, c3.kh, c3.kw)):
                continue
        names.append(n)
    return "/".join(names)


def measured_choices(
    device: torch.device,
    dtype: Optional[torch.dtype] = None,
    batch: Optional[int] = None,
    shape: Optional[tuple] = None,
    image_size: Optional[int] = None,
) -> list:
    """Every measured choice so far in this process (``choosers``) on ``device``, narrowed to
    ``dtype``, to inputs of ``batch`` images and to input ``shape`` where given (keys without such a
    field are kept): [{choice, where, key, chosen, us, errors, stored}], µs per candidate where
    measured (a choice read from the choice store has none)."""
    rows = []
    for name, chooser in choosers().items():
        for key, c in chooser.choices().items():
            fields = key._asdict() if hasattr(key, "_asdict") else {"key": key}
            if "device" in fields and not _same_device(fields["device"], device):
                continue
            if dtype is not None and "dtype" in fields and fields["dtype"] != dtype:
                continue
            key_shape = fields.get("shape")
            if batch is not None and isinstance(key_shape, tuple) and key_shape and key_shape[0] != batch:
                continue
            if shape is not None and isinstance(key_shape, tuple) and key_shape != tuple(shape):
                continue
            rows.append(
                {
                    "choice": name,
                    "where": _where(key_shape, image_size, fields.get("weight"), fields.get("w3")),
                    "key": {k: _jsonable(v) for k, v in fields.items()},
                    "chosen": c.name,
                    "us": {k: v * 1e6 for k, v in c.seconds.items()},
                    "errors": dict(c.errors),
                    "stored": c.stored,
                }
            )
    return rows
