"""Plain-PyTorch Inception block and GoogLeNet: the truth every test compares to.

Three variants of GoogLeNet:
* "torchvision": exactly ``torchvision.models.googlenet`` (BatchNorm eps=1e-3 and
  bias-free convs, the branch-3 3x3 quirk, ceil-mode pools, aux heads in training,
  transform_input); state_dict keys and shapes equal torchvision's.
* "paper": Szegedy et al. 2014: 5x5 branch, conv biases, no BatchNorm,
  LocalResponseNorm in the stem, every max pool 3x3/2 (maxpool4 too), dropout 0.4 before
  the classifier.  The aux heads keep torchvision's adaptive 4x4 average pool (the paper's
  5x5/3 pool gives the same 4x4 at 224x224, and no fixed size elsewhere).
* "d2l": the Dive-into-Deep-Learning textbook network: 5x5 branch, no BN, no LRN,
  no dropout, 1 input channel and 10 classes by default, padded pools so it runs from
  96x96 down to tiny images.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import NamedTuple, Optional

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .geometry import conv_out, pool_out

__all__ = ["BasicConv2d", "Inception", "InceptionAux", "GoogLeNet", "GoogLeNetOutputs", "BLOCK_CONFIGS", "VARIANTS"]

VARIANTS = ("torchvision", "paper", "d2l")
MAX_POOLS = ("maxpool1", "maxpool2", "maxpool3", "maxpool4")


def variant_layout(variant: str) -> dict:
    """What a variant's network holds besides weights: each max pool's (kernel, stride, padding,
    ceil_mode) and the dropout before the classifier (``dropout``).  torchvision's maxpool4 is
    2x2/2; the paper's and the textbook's are 3x3/2 like their others.  Dropout: torchvision's
    0.2, the paper's 0.4 ("40% ratio of dropped outputs"), none in the textbook's network."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown GoogLeNet variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    pool = (3, 2, 1, False) if variant == "d2l" else (3, 2, 0, True)
    pools = {"maxpool1": pool, "maxpool2": pool, "maxpool3": pool}
    pools["maxpool4"] = (2, 2, 0, True) if variant == "torchvision" else pool
    return {**pools, "dropout": {"torchvision": 0.2, "paper": 0.4, "d2l": 0.0}[variant]}


@functools.lru_cache(maxsize=None)
def _variant_pools(variant: str) -> tuple:
    """variant_layout's pools in MAX_POOLS order (the size check runs every forward)."""
    layout = variant_layout(variant)
    return tuple(layout[name] for name in MAX_POOLS)


def _max_pool_geometry(pool: nn.Module, default: tuple, memo: bool = True) -> tuple:
    """(kernel, stride, padding, ceil_mode) of a plain square nn.MaxPool2d (one a model was given in
    place of its variant's), else ``default``; ``memo=False`` skips the memo."""
    if type(pool) is not nn.MaxPool2d:
        return default
    settings = (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
    settings = tuple(tuple(v) if isinstance(v, list) else v for v in settings)  # (hashable for the memo)
    square = _square_pool_geometry if memo else _square_pool_geometry.__wrapped__
    return square(*settings, pool.ceil_mode, default)


@functools.lru_cache(maxsize=64)
def _square_pool_geometry(kernel, stride, padding, dilation, ceil_mode, default: tuple) -> tuple:
    sizes = []
    for value in (kernel, stride or kernel, padding, dilation):
        value = (value, value) if isinstance(value, int) else tuple(value)
        if len(set(value)) != 1:
            return default
        sizes.append(value[0])
    return default if sizes.pop() != 1 else (*sizes, bool(ceil_mode))


# transform_input's (scale, shift) per channel: ImageNet's (std / 0.5, (mean - 0.5) / 0.5).
_IMAGENET_RENORM = tuple(
    (std / 0.5, (mean - 0.5) / 0.5) for mean, std in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))
)

# name -> (in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj); the same in all three variants.
BLOCK_CONFIGS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    logits: Tensor
    aux_logits2: Optional[Tensor]
    aux_logits1: Optional[Tensor]


class BasicConv2d(nn.Module):
    """conv → (BatchNorm, eps=1e-3) → ReLU.  Without BatchNorm the conv has a bias."""

    def __init__(self, in_channels: int, out_channels: int, *, batch_norm: bool = True, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=not batch_norm, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True)


class LocalResponseNorm(nn.LocalResponseNorm):
    """The paper's LocalResponseNorm, which also takes 16-bit input on the CPU, where PyTorch has no
    16-bit kernel for it (its avg_pool3d): such input is normalised in float32 and rounded once."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


class Inception(nn.Module):
    """The four-branch Inception v1 block; ``branch3_kernel=3`` is torchvision's quirk, 5 the paper's."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        batch_norm: bool = True,
        branch3_kernel: int = 3,
    ) -> None:
        super().__init__()
        if branch3_kernel not in (3, 5):
            raise ValueError(f"branch3_kernel must be 3 (torchvision) or 5 (paper), got {branch3_kernel}")
        for name, value in (
            ("in_channels", in_channels),
            ("ch1x1", ch1x1),
            ("ch3x3red", ch3x3red),
            ("ch3x3", ch3x3),
            ("ch5x5red", ch5x5red),
            ("ch5x5", ch5x5),
            ("pool_proj", pool_proj),
        ):
            if int(value) < 1:
                raise ValueError(f"Inception {name} must be a positive channel count, got {value}")
        self.in_channels = in_channels
        self.branch3_kernel = branch3_kernel
        bn = batch_norm
        self.branch1 = BasicConv2d(in_channels, ch1x1, batch_norm=bn, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, batch_norm=bn, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, batch_norm=bn, kernel_size=3, padding=1),
        )
        k = branch3_kernel
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, batch_norm=bn, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, batch_norm=bn, kernel_size=k, padding=k // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, batch_norm=bn, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (used in training only), torchvision's layout."""

    def __init__(self, in_channels: int, num_classes: int, *, batch_norm: bool = True, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, batch_norm=batch_norm, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = torch.flatten(self.conv(x), 1)
        x = F.relu(self.fc1(x), inplace=True)
        return self.fc2(self.dropout(x))


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1); see the module docstring for the three variants."""

    block_class = Inception

    def __init__(
        self,
        num_classes: Optional[int] = None,
        *,
        variant: str = "torchvision",
        in_channels: Optional[int] = None,
        aux_logits: bool = False,
        transform_input: bool = False,
        dropout: Optional[float] = None,
        init_weights: bool = True,
        dropout_aux: float = 0.7,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown GoogLeNet variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if num_classes is None:
            num_classes = 10 if variant == "d2l" else 1000
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"GoogLeNet num_classes must be a positive int, got {num_classes!r}")
        if in_channels is None:
            in_channels = 1 if variant == "d2l" else 3
        if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) or in_channels < 1:
            raise ValueError(f"GoogLeNet in_channels must be a positive int, got {in_channels!r}")
        # The blocks' own keyword-only options (backend=), but for the two the variant sets; a block
        # class taking **kwargs takes anything.
        params = inspect.signature(self.block_class).parameters.values()
        known = {p.name for p in params if p.kind is p.KEYWORD_ONLY} - {"batch_norm", "branch3_kernel"}
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        unknown = [] if takes_any else [k for k in block_kwargs if k not in known]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {names}")
        layout = variant_layout(variant)
        if dropout is None:
            dropout = layout["dropout"]
        if transform_input and in_channels != 3:
            raise ValueError("transform_input needs 3 input channels (it applies ImageNet's per-channel statistics)")
        self.variant = variant
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        bn = variant == "torchvision"
        k = 3 if variant == "torchvision" else 5

        def max_pool(name):
            kernel, stride, padding, ceil_mode = layout[name]
            return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)

        self.conv1 = BasicConv2d(in_channels, 64, batch_norm=bn, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = max_pool("maxpool1")
        self.lrn1 = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if variant == "paper" else None
        self.conv2 = BasicConv2d(64, 64, batch_norm=bn, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, batch_norm=bn, kernel_size=3, padding=1)
        self.lrn2 = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if variant == "paper" else None
        self.maxpool2 = max_pool("maxpool2")
        block = self.block_class

        def make(name):
            return block(*BLOCK_CONFIGS[name], batch_norm=bn, branch3_kernel=k, **block_kwargs)

        self.inception3a = make("inception3a")
        self.inception3b = make("inception3b")
        self.maxpool3 = max_pool("maxpool3")
        self.inception4a = make("inception4a")
        self.inception4b = make("inception4b")
        self.inception4c = make("inception4c")
        self.inception4d = make("inception4d")
        self.inception4e = make("inception4e")
        self.maxpool4 = max_pool("maxpool4")
        self.inception5a = make("inception5a")
        self.inception5b = make("inception5b")
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, batch_norm=bn, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, batch_norm=bn, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        self._register_load_state_dict_pre_hook(self._drop_aux_keys)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's init: truncated normal for conv/linear weights, BN to identity; the linear
        # biases keep nn.Linear's own init, as torchvision's do.  (Its convs have no bias: the
        # paper and d2l variants' conv biases start at zero.)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _drop_aux_keys(self, state_dict, prefix, *args) -> None:
        # torchvision's published checkpoint carries aux-head weights even for aux_logits=False.
        if self.aux1 is None:
            for key in [k for k in state_dict if k.startswith((prefix + "aux1.", prefix + "aux2."))]:
                del state_dict[key]

    # -- input checks ---------------------------------------------------------------------------
    def min_input_size(self) -> int:
        """The smallest square spatial size this network accepts."""
        size = 1
        while self._spatial_error(size, size) is not None:
            size += 1
        return size

    def _spatial_error(self, h: int, w: int) -> Optional[str]:
        sizes = [h, w]
        stages = [
            ("conv1", lambda s: conv_out(s, 7, 2, 3)),
        ]
        # The pools as they are (from_torchvision copies a model's own); the variant's where one is
        # not a plain MaxPool2d the check can read.
        # While torch.compile traces, the memos' bodies: Dynamo warns at every lru_cache it meets.
        compiling = torch.compiler.is_compiling()
        pools = (_variant_pools.__wrapped__ if compiling else _variant_pools)(self.variant)
        for name, default in zip(MAX_POOLS, pools):
            geometry = _max_pool_geometry(self._modules.get(name), default, memo=not compiling)
            stages.append((name, lambda s, geometry=geometry: pool_out(s, *geometry)))
        for name, fn in stages:
            if min(sizes) < 1:
                return name
            sizes = [fn(s) for s in sizes]
            if min(sizes) < 1:
                return name
        return None

    def check_input(self, x: Tensor) -> None:
        """Raises a clear error for input this network cannot take."""
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():
            return  # a symbolic trace (torch.fx, create_feature_extractor) or torch.jit.trace: sizes are traced values
        if not isinstance(x, Tensor):
            raise TypeError(f"GoogLeNet expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"GoogLeNet expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"GoogLeNet expects a floating-point input, got {x.dtype}")
        if x.layout != torch.strided:
            raise TypeError(f"GoogLeNet expects a dense tensor, got layout {x.layout}; call .to_dense() first")
        conv1 = getattr(self.conv1, "conv", None)  # a conv1 put in later (1 channel for grayscale) decides
        channels = conv1.in_channels if isinstance(conv1, nn.Conv2d) else self.in_channels
        if x.shape[1] != channels:
            raise ValueError(
                f"GoogLeNet(variant={self.variant!r}) expects {channels} input channels, "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        h, w = x.shape[-2:]
        where = self._spatial_error(h, w)
        if where is not None:
            raise ValueError(
                f"input spatial size {h}x{w} is too small for GoogLeNet(variant={self.variant!r}): "
                f"it vanishes at {where}; the smallest square input is "
                f"{self.min_input_size()}x{self.min_input_size()}"
            )

    # -- forward --------------------------------------------------------------------------------
    def _transform_input(self, x: Tensor) -> Tensor:
        if not self.transform_input:
            return x
        # torchvision's ImageNet renormalisation, x * (std / 0.5) + (mean - 0.5) / 0.5 per channel.
        if x.dtype in (torch.float16, torch.bfloat16):
            # torchvision's own ops on Python floats, channel by channel: how a 16-bit tensor's
            # product and sum with a Python float round depends on the op and the device (on CPU,
            # the sum rounds the constant to 16 bits first, the product does not).
            return torch.cat([x[:, c : c + 1] * s + t for c, (s, t) in enumerate(_IMAGENET_RENORM)], 1)
        scale = x.new_tensor([s for s, _ in _IMAGENET_RENORM]).view(1, 3, 1, 1)
        shift = x.new_tensor([t for _, t in _IMAGENET_RENORM]).view(1, 3, 1, 1)
        return x * scale + shift

    # The network, written once: forward calls one hook per stage (stem, block, pool, a pool and
    # the block after it, head), which FusedGoogLeNet overrides with its fused stages.
    def _stem_body(self, x: Tensor) -> Tensor:
        """The stem up to maxpool2 (which forward runs with 3a, ``_pool_block``)."""
        x = self.maxpool1(self.conv1(x))
        if self.lrn1 is not None:
            x = self.lrn1(x)
        x = self.conv3(self.conv2(x))
        if self.lrn2 is not None:
            x = self.lrn2(x)
        return x

    def _stem(self, x: Tensor) -> Tensor:
        """The whole stem, maxpool2 included (a stage of its own for the benchmarks)."""
        return self._pool(self.maxpool2, self._stem_body(x))

    def _block(self, block: nn.Module, x: Tensor) -> Tensor:
        return block(x)

    def _pool(self, pool: nn.Module, x: Tensor) -> Tensor:
        return pool(x)

    def _pool_block(self, pool: nn.Module, block: nn.Module, x: Tensor) -> Tensor:
        return self._block(block, self._pool(pool, x))

    def _pool_blocks(self, pool: Optional[nn.Module], blocks: tuple, x: Tensor) -> Tensor:
        """The blocks one after another on ``pool(x)`` (on x where ``pool`` is None): a stage of
        consecutive blocks (3a-3b, 4a-4e, 5a-5b) with the pool before it."""
        x = self._block(blocks[0], x) if pool is None else self._pool_block(pool, blocks[0], x)
        for block in blocks[1:]:
            x = self._block(block, x)
        return x

    def _head(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: Tensor):
        self.check_input(x)
        x = self._stem_body(self._transform_input(x))
        x = self._pool_blocks(self.maxpool2, (self.inception3a, self.inception3b), x)
        aux1 = aux2 = None
        if self.training and (self.aux1 is not None or self.aux2 is not None):  # they read 4a's and 4d's outputs
            x = self._pool_block(self.maxpool3, self.inception4a, x)
            aux1 = self.aux1(x) if self.aux1 is not None else None
            for block in (self.inception4b, self.inception4c, self.inception4d):
                x = self._block(block, x)
            aux2 = self.aux2(x) if self.aux2 is not None else None
            x = self._block(self.inception4e, x)
        else:
            blocks4 = (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e)
            x = self._pool_blocks(self.maxpool3, blocks4, x)
        x = self._pool_blocks(self.maxpool4, (self.inception5a, self.inception5b), x)
        x = self._head(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x
