"""Per block (and the stem), and per stage outside the blocks: input and output shapes and every
conv's shape, taken by running torchvision's googlenet once with forward hooks, with their work
counts (``block_shapes``, ``stage_shapes``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch
from torch import nn

from benchmarks.helpers.settings import BLOCKS, STAGE_LAYERS, STAGES, STEM_LAYERS


@dataclass(frozen=True)
class ConvShape:
    cin: int
    cout: int
    kh: int
    kw: int
    groups: int
    hout: int
    wout: int

    def macs_per_image(self) -> int:
        return self.hout * self.wout * self.cout * (self.cin // self.groups) * self.kh * self.kw

    def weight_elems(self) -> int:
        # BN folded: every conv carries a bias.
        return self.cout * (self.cin // self.groups) * self.kh * self.kw + self.cout


@dataclass(frozen=True)
class BlockShape:
    name: str
    input_chw: tuple
    output_chw: tuple
    convs: tuple  # ConvShape, in forward order

    def macs(self, batch: int) -> int:
        return batch * sum(c.macs_per_image() for c in self.convs)

    def flops(self, batch: int) -> int:
        return 2 * self.macs(batch)

    def bytes(self, batch: int, elem_size: int) -> int:
        """Floor traffic: input read once, output written once, weights read once."""
        c, h, w = self.input_chw
        co, ho, wo = self.output_chw
        weights = sum(cv.weight_elems() for cv in self.convs)
        return elem_size * (batch * (c * h * w + co * ho * wo) + weights)


def _torchvision_googlenet():
    """torchvision's googlenet, random weights, no aux heads, eval mode: the shapes' source."""
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()


@lru_cache(maxsize=4)
def block_shapes(image_size: int) -> dict:
    """{"stem" and each block name: BlockShape} at ``image_size``, from a 1-image forward."""
    model = _torchvision_googlenet()
    io: dict = {}
    convs: dict = {}
    handles = []

    def owner(mod_name: str) -> Optional[str]:
        top = mod_name.split(".")[0]
        if top in BLOCKS:
            return top
        return "stem" if top in STEM_LAYERS else None

    def io_hook(key):
        def hook(mod, inp, out):
            io.setdefault(key, {})
            io[key].setdefault("in", tuple(inp[0].shape[1:]))
            io[key]["out"] = tuple(out.shape[1:])

        return hook

    def conv_hook(key):
        def hook(mod, inp, out):
            convs.setdefault(key, []).append(
                ConvShape(mod.in_channels, mod.out_channels, *mod.kernel_size, mod.groups, out.shape[2], out.shape[3])
            )

        return hook

    for name in BLOCKS:
        handles.append(getattr(model, name).register_forward_hook(io_hook(name)))
    # The stem's input is conv1's input, its output maxpool2's output.
    handles.append(model.conv1.register_forward_hook(io_hook("stem")))
    handles.append(model.maxpool2.register_forward_hook(io_hook("stem")))
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and owner(mod_name):
            handles.append(mod.register_forward_hook(conv_hook(owner(mod_name))))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    return {k: BlockShape(k, io[k]["in"], io[k]["out"], tuple(convs[k])) for k in ("stem", *BLOCKS)}


@dataclass(frozen=True)
class StageShape:
    """One stage outside the blocks (``settings.STAGES``): its input and output shapes and work.

    FLOPs: 2 per MAC of a conv or the fc, 1 per input element of the average pool; a max pool's
    comparisons are not counted (no arithmetic that a roofline's FLOP ceiling measures).  Bytes:
    input read once, output written once, weights (BN folded: with a bias) read once."""

    name: str
    input_chw: tuple
    output_chw: tuple  # the head's: (classes,)
    flops_per_image: int
    weight_elems: int
    conv_weight: Optional[tuple] = None  # (Cout, Cin, kh, kw) of the stage's conv, if it has one

    def flops(self, batch: int) -> int:
        return batch * self.flops_per_image

    def bytes(self, batch: int, elem_size: int) -> int:
        n_in, n_out = 1, 1
        for d in self.input_chw:
            n_in *= d
        for d in self.output_chw:
            n_out *= d
        return elem_size * (batch * (n_in + n_out) + self.weight_elems)


@lru_cache(maxsize=4)
def stage_shapes(image_size: int) -> dict:
    """{stage name: StageShape} for ``settings.STAGES`` at ``image_size``, from a 1-image forward."""
    model = _torchvision_googlenet()
    seen: dict = {}
    handles = []

    def hook(layer):
        def record(mod, inp, out):
            seen[layer] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))

        return record

    for layers in STAGE_LAYERS.values():
        for layer in layers:
            handles.append(getattr(model, layer).register_forward_hook(hook(layer)))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name in STAGES:
        layers = STAGE_LAYERS[name]
        flops, weights, conv_weight = 0, 0, None
        for layer in layers:
            mod = getattr(model, layer)
            conv = getattr(mod, "conv", None)
            in_shape, out_shape = seen[layer]
            if isinstance(conv, nn.Conv2d):
                shape = ConvShape(conv.in_channels, conv.out_channels, *conv.kernel_size, conv.groups, *out_shape[1:])
                flops += 2 * shape.macs_per_image()
                weights += shape.weight_elems()
                conv_weight = tuple(conv.weight.shape)
            elif isinstance(mod, nn.Linear):
                flops += 2 * mod.in_features * mod.out_features
                weights += mod.weight.numel() + mod.bias.numel()
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                flops += in_shape[0] * in_shape[1] * in_shape[2]
        out[name] = StageShape(name, seen[layers[0]][0], seen[layers[-1]][1], flops, weights, conv_weight)
    return out
