"""The work counts behind every roofline fraction the benchmarks report.

A fraction is the floor time (FLOPs over the FLOP ceiling, or bytes over the copy ceiling) over
the measured time, with the FLOPs and bytes counted off the network's shapes
(benchmarks/helpers/shapes.py, roofline.launch1_work).  A miscount misstates every fraction
the GPU issues are judged by, on any device.  Here the counts are held against torchvision's
own figure for the whole network, and against the arithmetic written out layer by layer for a
block, every stage outside the blocks and launch 1's two roles.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from benchmarks.helpers.roofline import launch1_work
from benchmarks.helpers.settings import BLOCKS, STAGES
from benchmarks.helpers.shapes import block_shapes, stage_shapes

# inception3a of torchvision's googlenet at 224 px: 192 input channels at 28x28; the branches'
# (Cin, Cout, k) in forward order (its "5x5" branch is a 3x3, as torchvision builds it).
A3_CONVS = ((192, 64, 1), (192, 96, 1), (96, 128, 3), (192, 16, 1), (16, 32, 3), (192, 32, 1))


def _macs(convs, hw):
    return hw * sum(cin * cout * k * k for cin, cout, k in convs)


def _weights(convs):  # BN folded: every conv has a bias
    return sum(cout * cin * k * k + cout for cin, cout, k in convs)


def test_network_macs_are_torchvisions_figure():
    """The stem, the nine blocks and the head's fc sum to the multiply-adds torchvision's weights
    entry states for googlenet at 224 px (1.498 G, given to three decimals)."""
    blocks = block_shapes(224)
    assert tuple(blocks) == ("stem", *BLOCKS)
    fc_macs = 1024 * 1000
    total = sum(b.macs(1) for b in blocks.values()) + fc_macs
    stated = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["_ops"] * 1e9
    assert abs(total - stated) <= 0.5e6, (total, stated)
    # The stages outside the blocks count the same stem convs: conv1 + conv2 + conv3 FLOPs.
    stages = stage_shapes(224)
    assert tuple(stages) == STAGES
    assert sum(stages[s].flops(1) for s in ("conv1", "conv2", "conv3")) == blocks["stem"].flops(1)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("elem", [2, 4])
def test_block_counts_written_out(batch, elem):
    a3 = block_shapes(224)["inception3a"]
    assert a3.input_chw == (192, 28, 28) and a3.output_chw == (256, 28, 28)
    assert a3.flops(batch) == 2 * batch * _macs(A3_CONVS, 28 * 28)
    # Floor traffic: the input read once, the concatenated output written once, weights once.
    assert a3.bytes(batch, elem) == elem * (batch * (192 + 256) * 28 * 28 + _weights(A3_CONVS))
    # At another image size only the spatial sizes change (3a is 14x14 at 112 px).
    small = block_shapes(112)["inception3a"]
    assert small.input_chw == (192, 14, 14) and small.flops(batch) == 2 * batch * _macs(A3_CONVS, 14 * 14)
    # The stem: from conv1's input to maxpool2's output, its three convs at their own output sizes.
    stem = block_shapes(224)["stem"]
    assert stem.input_chw == (3, 224, 224) and stem.output_chw == (192, 28, 28)
    stem_macs = 112 * 112 * 64 * 3 * 49 + 56 * 56 * (64 * 64 + 192 * 64 * 9)
    assert stem.flops(batch) == 2 * batch * stem_macs
    stem_weights = _weights(((3, 64, 7), (64, 64, 1), (64, 192, 3)))
    assert stem.bytes(batch, elem) == elem * (batch * (3 * 224 * 224 + 192 * 28 * 28) + stem_weights)


@pytest.mark.parametrize("batch", [1, 5])
def test_stage_counts_written_out(batch):
    """Each stage: 2 FLOPs per multiply-add of its conv or fc, 1 per element the average pool
    reads, none for a max pool; bytes are the stage's input and output once and its weights."""
    stages = stage_shapes(224)
    elem = 2

    def expect(name, cin_hw, cout_hw, flops, weights):
        s = stages[name]
        assert (s.input_chw, s.output_chw) == (cin_hw, cout_hw), name
        assert s.flops(batch) == batch * flops, name
        n_in, n_out = torch.Size(cin_hw).numel(), torch.Size(cout_hw).numel()
        assert s.bytes(batch, elem) == elem * (batch * (n_in + n_out) + weights), name

    # conv1 (7x7 stride 2 to 112x112) with maxpool1 (to 56x56, ceil mode): one stage.
    expect("conv1", (3, 224, 224), (64, 56, 56), 2 * 112 * 112 * 64 * 3 * 49, 64 * 3 * 49 + 64)
    expect("conv2", (64, 56, 56), (64, 56, 56), 2 * 56 * 56 * 64 * 64, 64 * 64 + 64)
    expect("conv3", (64, 56, 56), (192, 56, 56), 2 * 56 * 56 * 192 * 64 * 9, 192 * 64 * 9 + 192)
    expect("maxpool2", (192, 56, 56), (192, 28, 28), 0, 0)
    expect("maxpool3", (480, 28, 28), (480, 14, 14), 0, 0)
    expect("maxpool4", (832, 14, 14), (832, 7, 7), 0, 0)  # 2x2 stride 2, ceil mode
    expect("head", (1024, 7, 7), (1000,), 1024 * 49 + 2 * 1024 * 1000, 1024 * 1000 + 1000)
    assert stages["conv3"].conv_weight == (192, 64, 3, 3) and stages["head"].conv_weight is None


@pytest.mark.parametrize("batch", [1, 4])
def test_launch1_role_counts(batch):
    """Launch 1 of 3a: the packed reduce GEMM (branch 1 and the two reductions, 64 + 96 + 16
    columns) and the pool branch's 1x1 (32 columns) over every input pixel; each role's bytes
    are the input once, the columns it writes and its packed weights and bias."""
    from inception_fast import FusedGoogLeNet

    model = FusedGoogLeNet.from_torchvision(torchvision.models.googlenet(weights=None, init_weights=True).eval())
    with torch.no_grad():
        packed = model.inception3a.packed(torch.float32)
    shape = block_shapes(224)["inception3a"]
    pix, cin, elem = batch * 28 * 28, 192, 2
    red = (pix * cin * 176, pix * 176 + 176 * cin + 176)
    pool = (pix * cin * 32, pix * 32 + 32 * cin + 32)
    for roles, parts in ((("reduce",), [red]), (("pool",), [pool]), (("reduce", "pool"), [red, pool])):
        flops, nbytes = launch1_work(shape, packed, batch, elem, roles)
        assert flops == 2 * sum(m for m, _ in parts), roles
        assert nbytes == elem * (pix * cin + sum(e for _, e in parts)), roles
    assert launch1_work(shape, packed, batch, elem) == launch1_work(shape, packed, batch, elem, ("reduce", "pool"))
