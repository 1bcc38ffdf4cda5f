#!/usr/bin/env python3
"""pytest-benchmark JSON (from bench_throughput.py / bench_blocks.py) -> markdown and a PNG chart.

    python3 benchmarks/report.py bench.json blocks.json compile.json \
        --md report.md --chart chart.png --merged-json all.json --short

Reads the headline numbers from each benchmark's extra_info (time_fn medians), not
from pytest-benchmark's wall-clock stats.  Input files that are missing or
unreadable are reported and skipped, so a suite whose one step failed still gets
a report.  Needs only the standard library; the chart needs matplotlib and is
skipped (with a message, not an error) without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from collections import OrderedDict

MODEL_ORDER = [
    "torchvision",
    "reference",
    "fused_torch",
    "fused_triton",
    "fused_cuda",
    "fused_cpp",
    "fused_onednn",
    "fused_auto",
    "tv_compile",
    "onnxruntime",
    "openvino",
]
# Human-readable model names, also written into each record's extra_info["label"] (benchmarks/bench_throughput.py).
MODEL_LABELS = {
    "torchvision": "torchvision eager",
    "reference": "reference GoogLeNet",
    "fused_torch": "FusedGoogLeNet[torch]",
    "fused_triton": "FusedGoogLeNet[triton]",
    "fused_cuda": "FusedGoogLeNet[cuda]",
    "fused_cpp": "FusedGoogLeNet[cpp]",
    "fused_onednn": "FusedGoogLeNet[onednn]",
    "fused_auto": "FusedGoogLeNet[auto]",
    "tv_compile": "torch.compile(tv), freezing",
    "onnxruntime": "ONNX Runtime (CPU provider)",
    "openvino": "OpenVINO",
}
# The CPU peers each precision's rows are held against (the best of them): benchmarks.helpers.settings.PEER_DTYPES.
CPU_PEERS = {"fp32": ("onnxruntime", "openvino", "tv_compile"), "bf16": ("openvino",)}
BLOCK_ORDER = [
    "stem",
    "inception3a",
    "inception3b",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "inception5a",
    "inception5b",
]
IMPL_ORDER = ["torchvision", "torch", "triton", "cuda", "cpp", "onednn", "hopper", "launch1_ext", "launch1_triton"]
IMPL_LABELS = {
    "torchvision": "torchvision (BN, cat)",
    "torch": "torch (ATen, folded)",
    "triton": "triton",
    "cuda": "cuda",
    "cpp": "cpp",
    "onednn": "onednn (prepacked)",
    "launch1_ext": "launch-1 ext",
    "launch1_triton": "launch-1 triton",
}


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def load(paths):
    """Merged {machine_info, datetime, sources, missing, benchmarks} from pytest-benchmark JSON files."""
    merged = {"machine_info": {}, "datetime": None, "sources": [], "missing": [], "benchmarks": []}
    by_name = OrderedDict()
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            merged["missing"].append(f"{path} (not found)")
            continue
        except (OSError, ValueError) as exc:
            merged["missing"].append(f"{path} ({type(exc).__name__}: {exc})")
            continue
        merged["sources"].append(os.path.basename(path))
        info = data.get("machine_info") or {}
        if info.get("inception_fast") or not merged["machine_info"]:
            merged["machine_info"] = info if info.get("inception_fast") else (merged["machine_info"] or info)
        merged["datetime"] = merged["datetime"] or data.get("datetime")
        merged.setdefault("version", data.get("version"))
        for bench in data.get("benchmarks", []):
            extra = bench.get("extra_info", {})
            # The same case timed eagerly and as CUDA-graph replays, or at another batch (two files),
            # is two results.
            key = (
                bench.get("fullname") or bench.get("name"),
                extra.get("device"),
                extra.get("timing"),
                extra.get("batch"),
                extra.get("cpu_threads") if extra.get("device") == "cpu" else None,
            )
            by_name[key] = bench
    merged["benchmarks"] = list(by_name.values())
    return merged


def _env(merged):
    return (merged.get("machine_info") or {}).get("inception_fast") or {}


def result_basename(merged):
    return _env(merged).get("result_basename") or "results"


def _rows(merged, kind):
    return [
        b["extra_info"]
        for b in merged["benchmarks"]
        if (b.get("extra_info") or {}).get("kind") == kind and b["extra_info"].get("median_s")
    ]


# ---------------------------------------------------------------------------------------
# formatting helpers
# ---------------------------------------------------------------------------------------
def _fmt_rate(v):
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")


def _fmt_x(v):
    return "—" if v is None else f"{v:.2f}×"


def _fmt_pct(v):
    return "—" if v is None else f"{100 * v:.0f}%"


def _fmt_us(s):
    return "—" if s is None else (f"{s * 1e6:,.0f}" if s * 1e6 >= 100 else f"{s * 1e6:.3g}")


def _fmt_err(r):
    v = r.get("rel_error_vs_torchvision", r.get("rel_error_vs_torch_backend"))
    return "—" if v is None else f"{v:.1e}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _order(values, order):
    return sorted(values, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def _device(r):
    """The device of a row; a CPU row says how many threads it ran on (runs at 1 and 2 threads
    are separate tables)."""
    dev = r.get("device")
    threads = r.get("cpu_threads")
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})" if dev == "cpu" and threads else dev


def _config(r):
    """(device, dtype, format, batch); CUDA-graph timings form their own format group."""
    fmt = r.get("memory_format")
    if r.get("timing") == "cuda_graph":
        fmt = f"{fmt}, CUDA graph"
    elif r.get("cuda_graph_error"):  # asked for graph replays, timed eagerly: kept apart from the eager runs
        fmt = f"{fmt}, CUDA graph failed"
    return (_device(r), r.get("dtype"), fmt, r.get("batch"))


def _eager_config(config):
    """The eager config a CUDA-graph config was derived from (itself for an eager one)."""
    dev, dtype, fmt, batch = config
    return (dev, dtype, fmt.removesuffix(", CUDA graph failed").removesuffix(", CUDA graph"), batch)


def _headline(rows):
    """(device, dtype, memory_format) shown in the short table: bf16 channels_last when measured."""
    configs = {(_device(r), r["dtype"], r["memory_format"]) for r in rows}
    for want in (
        ("cuda", "bf16", "channels_last"),
        ("cuda", "fp32", "channels_last"),
        ("cpu", "fp32", "channels_last"),
    ):
        found = [c for c in configs if c[0].split(" ")[0] == want[0] and c[1:] == want[1:]]
        if found:  # on CPU: the run with the most threads
            return max(found, key=lambda c: int("".join(ch for ch in c[0] if ch.isdigit()) or 0))
    return sorted(configs, key=str)[0] if configs else None


# ---------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------
def throughput_index(rows):
    """{config: {model: row}} plus speedups over torchvision eager and torch.compile."""
    index = {}
    for r in rows:
        index.setdefault(_config(r), {})[r["model"]] = r
    for config, models in index.items():
        eager = models.get("torchvision")
        # CUDA-graph replays are held against the compile anchor of the same eager config.
        comp = models.get("tv_compile") or index.get(_eager_config(config), {}).get("tv_compile")
        for r in models.values():
            r["x_eager"] = eager["median_s"] / r["median_s"] if eager else None
            r["x_compile"] = comp["median_s"] / r["median_s"] if comp else None
    return index


def throughput_markdown(rows):
    if not rows:
        return "## Throughput\n\nNo throughput results.\n"
    index = throughput_index(rows)
    out = ["## Throughput (images/s; × = speedup over torchvision eager at the same config)\n"]
    groups = sorted(
        {(c[0], c[1], c[2]) for c in index},
        key=lambda g: (g[0] != "cuda", g[0], g[1] != "bf16", g[2] != "channels_last"),
    )
    for dev, dtype, fmt in groups:
        batches = sorted({c[3] for c in index if c[:3] == (dev, dtype, fmt)}, reverse=True)
        models = _order({m for c, ms in index.items() if c[:3] == (dev, dtype, fmt) for m in ms}, MODEL_ORDER)
        table = []
        for m in models:
            cells = []
            for b in batches:
                r = index.get((dev, dtype, fmt, b), {}).get(m)
                cells.append("—" if r is None else f"{_fmt_rate(r['images_per_s'])} ({_fmt_x(r['x_eager'])})")
            table.append([MODEL_LABELS.get(m, m), *cells])
        out.append(f"### {dev} {dtype} {fmt}\n")
        out.append(_table(["model", *(f"batch {b}" for b in batches)], table) + "\n")
    errs = {}
    for r in rows:
        v = r.get("rel_error_vs_torchvision")
        if v is not None:
            key = (r["model"], r["dtype"])
            errs[key] = v if math.isnan(v) or math.isnan(errs.get(key, 0.0)) else max(errs.get(key, 0.0), v)
    if errs:
        out.append("Largest ‖out − torchvision‖/‖torchvision‖ of the logits over the configs (a record, not a test):\n")
        err_rows = [[MODEL_LABELS.get(m, m), d, f"{v:.1e}"] for (m, d), v in sorted(errs.items(), key=str)]
        out.append(_table(["model", "dtype", "rel err"], err_rows) + "\n")
    chosen = [
        (c, ms["fused_auto"]["auto_choices"]) for c, ms in index.items() if ms.get("fused_auto", {}).get("auto_choices")
    ]
    if chosen:
        out.append('backend="auto": the backends it measured fastest, counted over the nine blocks:\n')
        out.append(
            _table(
                ["config", "chosen"],
                [
                    [f"{c[0]} {c[1]} {c[2]} b{c[3]}", ", ".join(f"{b} × {n}" for b, n in sorted(ch.items()))]
                    for c, ch in sorted(chosen, key=str)
                ],
            )
            + "\n"
        )
    stems = sorted(
        {
            (
                f"{c[0]} {c[1]} {c[2]} b{c[3]}",
                r["stem_conv1"]["chosen"],
                ", ".join(f"{v} {us:,.0f}" for v, us in r["stem_conv1"]["us"].items()),
            )
            for c, ms in index.items()
            for r in ms.values()
            if r.get("stem_conv1")
        }
    )
    if stems:
        out.append("The stem's first conv, as FusedGoogLeNet measured it (µs of conv1 + ReLU + max pool):\n")
        out.append(_table(["config", "chosen", "variants (µs)"], [list(t) for t in stems]) + "\n")
    convs = sorted(
        {
            (
                f"{c[0]} {c[1]} {c[2]} b{c[3]}",
                "x".join(map(str, v["weight"])),
                v["chosen"],
                ", ".join(f"{n} {us:,.0f}" for n, us in v["us"].items()),
            )
            for c, ms in index.items()
            for r in ms.values()
            for v in (r.get("stem_conv1") or {}).get("conv_relu", [])
        }
    )
    if convs:
        out.append("The stem's conv2 and conv3 with bias + ReLU, ATen passes or cuDNN's fused op, as measured (µs):\n")
        out.append(_table(["config", "weight", "chosen", "variants (µs)"], [list(t) for t in convs]) + "\n")
    pools_head = sorted(
        {
            (
                f"{c[0]} {c[1]} {c[2]} b{c[3]}",
                f"{v['stage']} {'x'.join(map(str, v['shape']))}",
                v["chosen"],
                ", ".join(f"{n} {us:,.1f}" for n, us in v["us"].items()),
            )
            for c, ms in index.items()
            for r in ms.values()
            for v in (r.get("stem_conv1") or {}).get("stages", [])
        }
    )
    if pools_head:
        out.append("The max pools and the head, ATen or Triton, as measured (µs):\n")
        out.append(_table(["config", "stage input", "chosen", "variants (µs)"], [list(t) for t in pools_head]) + "\n")
    compiled = [c for c, ms in index.items() if "tv_compile" in ms]
    if compiled:
        out.append("### Against torch.compile (default mode, freezing)\n")
        out.append(
            "Rows marked CUDA graph are graph replays (GPU time, no host time) held against the "
            "compiled model's eager calls.\n"
        )
        table = []
        # Each anchor's config, then the same config timed as CUDA-graph replays (GPU time only).
        shown = [c2 for c in sorted(compiled, key=str) for c2 in sorted(index, key=str) if _eager_config(c2) == c]
        for c in shown:  # graph rows: GPU time only, against the compiled model's eager calls
            for m in _order(index[c], MODEL_ORDER):
                r = index[c][m]
                table.append(
                    [
                        f"{c[0]} {c[1]} {c[2]} b{c[3]}",
                        MODEL_LABELS.get(m, m),
                        f"{r['median_s'] * 1e3:.3f}",
                        _fmt_rate(r["images_per_s"]),
                        _fmt_x(r["x_eager"]),
                        _fmt_x(r["x_compile"]),
                    ]
                )
        out.append(_table(["config", "model", "ms", "img/s", "× eager", "× compile"], table) + "\n")
        comp_s = [index[c]["tv_compile"].get("compile_s") for c in compiled]
        out.append("Compile time (first call): " + ", ".join(f"{s:.1f} s" for s in comp_s if s is not None) + "\n")
    out.append(peers_markdown(rows))
    out.append(profile_markdown(rows))
    return "\n".join(out)


def _spread(r):
    """(low, high) seconds: the interquartile range, or min–max for records without it."""
    if r.get("q1_s") is not None and r.get("q3_s") is not None:
        return r["q1_s"], r["q3_s"]
    if r.get("min_s") is not None and r.get("max_s") is not None:
        return r["min_s"], r["max_s"]
    return r["median_s"], r["median_s"]


def _overlap(a, b):
    (a1, a3), (b1, b3) = _spread(a), _spread(b)
    return a1 <= b3 and b1 <= a3


def _peer_label(r):
    label = MODEL_LABELS.get(r["model"], r["model"])
    if r["model"] == "openvino" and r.get("inference_precision"):
        label += f", {r['inference_precision']}"
    return label


def best_peers(index):
    """{(device, dtype, batch): best peer row}: the fastest of CPU_PEERS[dtype] in the
    channels_last config (where the peers are grouped)."""
    best = {}
    for (dev, dtype, fmt, batch), models in index.items():
        if fmt != "channels_last":
            continue
        peers = [models[m] for m in CPU_PEERS.get(dtype, ()) if m in models]
        if peers:
            best[(dev, dtype, batch)] = min(peers, key=lambda r: r["median_s"])
    return best


def peers_markdown(rows):
    """Every CPU row beside the engines a CPU user would pick instead, per precision and thread
    count: median ms with the interquartile range, and × the best peer (best peer's time over
    the row's: above 1 is faster).  ≈ marks a row whose spread overlaps the best peer's."""
    index = throughput_index(rows)
    best = best_peers(index)
    if not best:
        return ""
    out = [
        "### Against the CPU peers\n",
        "ms per forward: median (interquartile range). × best peer: the fastest peer's median over the row's "
        "(above 1: faster than every peer). Peers: fp32, the best of ONNX Runtime, OpenVINO f32 and "
        "torch.compile with freezing; bf16, OpenVINO bf16. ≈: the row's interquartile range overlaps the best "
        "peer's, so this run cannot rank the two. The engines take an NCHW array and pick their own layout.\n",
    ]
    for dev, dtype in sorted({(k[0], k[1]) for k in best}, key=lambda g: (g[0], g[1] != "fp32")):
        batches = sorted({k[2] for k in best if k[:2] == (dev, dtype)}, reverse=True)
        entries = []  # (label, {batch: row})
        nchw = {b: index.get((dev, dtype, "contiguous", b), {}).get("torchvision") for b in batches}
        if any(nchw.values()):
            entries.append(("torchvision eager, NCHW input", nchw))
        models = _order({m for b in batches for m in index.get((dev, dtype, "channels_last", b), {})}, MODEL_ORDER)
        for m in models:
            cells = {b: index.get((dev, dtype, "channels_last", b), {}).get(m) for b in batches}
            some = next(r for r in cells.values() if r)
            label = "torchvision eager, channels_last" if m == "torchvision" else _peer_label(some)
            entries.append((label, cells))
        table = []
        for label, cells in entries:
            row = [label]
            for b in batches:
                r, peer = cells.get(b), best[(dev, dtype, b)]
                if r is None:
                    row += ["—", "—"]
                    continue
                lo, hi = _spread(r)
                mark = " ≈" if r is not peer and _overlap(r, peer) else ""
                row += [
                    f"{r['median_s'] * 1e3:.1f} ({lo * 1e3:.1f}–{hi * 1e3:.1f})",
                    _fmt_x(peer["median_s"] / r["median_s"]) + mark,
                ]
            table.append(row)
        header = ["model"] + [h for b in batches for h in (f"b{b} ms", f"b{b} × best peer")]
        out.append(f"#### {dev} {dtype}\n")
        out.append(_table(header, table) + "\n")
        out.append(
            "Best peer: " + "; ".join(f"batch {b}: {_peer_label(best[(dev, dtype, b)])}" for b in batches) + ".\n"
        )
    return "\n".join(out)


def profile_markdown(rows, top=8):
    """Where one forward's time goes, per model that recorded a kernel profile (bench_throughput
    with INCEPTION_FAST_BENCH_PROFILE=1)."""
    profiled = [r for r in rows if r.get("kernel_profile")]
    if not profiled:
        return ""
    out = [
        "### Where the time goes (torch.profiler, one forward)\n",
        "Kernel time: the device time of all kernels of one forward. Busy: kernel time over the timed "
        "forward; well under 100% means the forward waits on the host (Python, launches).\n",
    ]
    summary, details, errors = [], [], []
    for r in sorted(
        profiled, key=lambda r: (str(_config(r)), _order(MODEL_ORDER + [r["model"]], MODEL_ORDER).index(r["model"]))
    ):
        prof = r["kernel_profile"]
        label = MODEL_LABELS.get(r["model"], r["model"])
        config = f"{r['device']} {r['dtype']} {r['memory_format']} b{r['batch']}"
        if prof.get("error"):
            errors.append(f"- {label} ({config}): {prof['error']}")
            continue
        summary.append(
            [
                config,
                label,
                f"{r['median_s'] * 1e3:.3f}",
                f"{prof['us_per_call'] / 1e3:.3f}",
                _fmt_pct(r.get("busy")),
                str(len(prof.get("kernels", []))),
            ]
        )
        details.append(f"{label}, {config} ({prof['source']}):\n")
        details.append(
            _table(
                ["kernel", "µs", "calls", "share"],
                [
                    [k["name"][:90].replace("|", "/"), f"{k['us']:,.1f}", f"{k['calls']:g}", _fmt_pct(k.get("share"))]
                    for k in prof["kernels"][:top]
                ],
            )
            + "\n"
        )
    if summary:
        out.append(_table(["config", "model", "timed ms", "kernel ms", "busy", "names shown"], summary) + "\n")
    out += details
    if errors:
        out.append("The profiler failed for:\n" + "\n".join(errors) + "\n")
    return "\n".join(out)


def throughput_short(rows):
    if not rows:
        return "throughput: no results"
    index = throughput_index(rows)
    head = _headline(rows)
    batches = sorted({c[3] for c in index if c[:3] == head}, reverse=True)
    models = _order({m for c, ms in index.items() if c[:3] == head for m in ms}, MODEL_ORDER)
    # The compile anchor may have run at another dtype/format: show it where it ran.
    table = []
    for m in models:
        cells = []
        for b in batches:
            r = index.get((*head, b), {}).get(m)
            if r is None:
                cells.append("—")
            else:
                extra = f" {_fmt_x(r['x_compile'])}c" if r.get("x_compile") and m != "tv_compile" else ""
                cells.append(f"{_fmt_rate(r['images_per_s'])} {_fmt_x(r['x_eager'])}{extra}")
        table.append([MODEL_LABELS.get(m, m), *cells])
    title = f"img/s, {head[0]} {head[1]} {head[2]} (× over eager; c = over torch.compile)"
    text = title + "\n" + _table(["model", *(f"b{b}" for b in batches)], table)
    graphs = sorted((c for c in index if c[2].endswith("CUDA graph")), key=str)
    for c in graphs:
        cells = [
            f"{MODEL_LABELS.get(m, m)} {index[c][m]['median_s'] * 1e3:.3f}"
            + (f" ({_fmt_x(index[c][m]['x_compile'])} eager compile)" if index[c][m].get("x_compile") else "")
            for m in _order(index[c], MODEL_ORDER)
        ]
        text += f"\nms per forward, {c[0]} {c[1]} {c[2]} b{c[3]}: " + "; ".join(cells)
    best = best_peers(index)
    for dev, dtype in sorted({k[:2] for k in best}, key=lambda g: (g[0], g[1] != "fp32")):
        peer_batches = sorted({k[2] for k in best if k[:2] == (dev, dtype)}, reverse=True)
        cells = []
        for m in _order(
            {m for b in peer_batches for m in index.get((dev, dtype, "channels_last", b), {})}, MODEL_ORDER
        ):
            if not m.startswith("fused_"):
                continue
            ratios = []
            for b in peer_batches:
                r, peer = index.get((dev, dtype, "channels_last", b), {}).get(m), best[(dev, dtype, b)]
                ratios.append(
                    "—" if r is None else _fmt_x(peer["median_s"] / r["median_s"]) + (" ≈" if _overlap(r, peer) else "")
                )
            cells.append(f"{MODEL_LABELS.get(m, m)} {' '.join(ratios)}")
        if cells:
            text += (
                f"\n× best peer, {dev} {dtype} ({', '.join(f'b{b}' for b in peer_batches)}; ≈ spreads overlap): "
                + "; ".join(cells)
            )
    busy = [f"{MODEL_LABELS.get(r['model'], r['model'])} {_fmt_pct(r['busy'])}" for r in rows if r.get("busy")]
    if busy:
        text += "\ndevice busy during the timed forward (profiled config): " + "; ".join(busy)
    return text


# ---------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------
def block_index(rows):
    index = {}
    for r in rows:
        index.setdefault(r["block"], {})[r["impl"]] = r
    return index


def _launch1_ratio(impls):
    ext, tri = impls.get("launch1_ext"), impls.get("launch1_triton")
    return ext["median_s"] / tri["median_s"] if ext and tri else None


def blocks_markdown(rows):
    if not rows:
        return "## Blocks\n\nNo per-block results.\n"
    index = block_index(rows)
    first = rows[0]
    roof = any(r.get("roofline_fraction") is not None for r in rows)
    impls = _order({i for v in index.values() for i in v}, IMPL_ORDER)
    graphs = ", CUDA-graph replays" if any(r.get("timing") == "cuda_graph" for r in rows) else ""
    out = [
        f"## Per block ({first['device']}, {first['dtype']}, batch {first['batch']}, channels_last{graphs})\n",
        "Time in µs"
        + (
            " (fraction of the roofline: floor = max(FLOPs / 779 TFLOP/s, bytes / 2.98 TB/s), "
            "bytes = input + output + weights once)"
            if roof
            else ""
        )
        + ". Launch-1 ext/triton: the compiled extension's launch 1 over Triton's (≤ 1.10 is the CUDA target).\n",
    ]
    table = []
    for blk in _order(index, BLOCK_ORDER):
        v = index[blk]
        cells = []
        for i in impls:
            r = v.get(i)
            if r is None:
                cells.append("—")
            else:
                cells.append(
                    _fmt_us(r["median_s"])
                    + (f" ({_fmt_pct(r['roofline_fraction'])})" if r.get("roofline_fraction") is not None else "")
                )
        full = [r for k, r in v.items() if not k.startswith("launch1")]
        mmac = full[0]["flops"] / 2 / full[0]["batch"] / 1e6 if full else None
        table.append([blk, "—" if mmac is None else f"{mmac:,.1f}", *cells, _fmt_x(_launch1_ratio(v))])
    out.append(_table(["block", "MMAC/img", *(IMPL_LABELS.get(i, i) for i in impls), "L1 ext/triton"], table) + "\n")
    for impl in ("torch", "triton"):
        stem = index.get("stem", {}).get(impl, {}).get("stem_conv1")
        if stem:
            times = ", ".join(f"{v} {us:,.0f}" for v, us in stem["us"].items())
            out.append(
                f"The fused stem (backend {impl}) ran its first conv as `{stem['chosen']}` (measured, µs of "
                f"conv1 + ReLU + max pool: {times}).\n"
            )
    failed = [
        f"- {r['block']} {IMPL_LABELS.get(r['impl'], r['impl'])}: {r['cuda_graph_error']}"
        for r in rows
        if r.get("cuda_graph_error")
    ]
    if failed:
        out.append(
            "Could not be captured as a CUDA graph, so timed as eager calls (host time included):\n"
            + "\n".join(failed)
            + "\n"
        )
    out.append("### Detail\n")
    detail = []
    for blk in _order(index, BLOCK_ORDER):
        for i in _order(index[blk], IMPL_ORDER):
            r = index[blk][i]
            detail.append(
                [
                    blk,
                    IMPL_LABELS.get(i, i),
                    r.get("backend", ""),
                    _fmt_us(r["median_s"]),
                    f"{r['tflops']:.2f}",
                    f"{r['gbps']:.0f}",
                    _fmt_pct(r.get("roofline_fraction")),
                    r.get("bound") or "—",
                    f"{r['flops'] / 1e9:.2f}",
                    f"{r['bytes'] / 1e6:.1f}",
                    _fmt_err(r),
                ]
            )
    out.append(
        _table(
            ["block", "impl", "backend", "µs", "TFLOP/s", "GB/s", "roofline", "bound", "GFLOP", "MB", "rel err"], detail
        )
        + "\n"
    )
    out.append(
        "rel err: ‖out − ref‖/‖ref‖ against torchvision's block (launch 1: against the torch backend's "
        "slices and scratch); a record, not a test.\n"
    )
    return "\n".join(out)


def blocks_short(rows):
    if not rows:
        return "blocks: no results"
    index = block_index(rows)
    impls = [i for i in IMPL_ORDER if any(i in v for v in index.values())]
    table = []
    for blk in _order(index, BLOCK_ORDER):
        v = index[blk]
        if blk == "stem":
            continue
        cells = []
        for i in impls:
            r = v.get(i)
            cells.append(
                "—"
                if r is None
                else _fmt_us(r["median_s"])
                + (f" {_fmt_pct(r['roofline_fraction'])}" if r.get("roofline_fraction") is not None else "")
            )
        table.append([blk.replace("inception", ""), *cells, _fmt_x(_launch1_ratio(v))])
    r0 = rows[0]
    roof = any(r.get("roofline_fraction") is not None for r in rows)
    title = f"µs per block, {r0['device']} {r0['dtype']} batch {r0['batch']}" + (" (% of roofline)" if roof else "")
    short = {"torchvision": "tv", "launch1_ext": "L1 ext", "launch1_triton": "L1 triton"}
    return title + "\n" + _table(["block", *(short.get(i, i) for i in impls), "L1 ext/tri"], table)


# ---------------------------------------------------------------------------------------
# header, chart, main
# ---------------------------------------------------------------------------------------
def header_markdown(merged):
    env = _env(merged)
    rows = [b.get("extra_info") or {} for b in merged["benchmarks"]]
    device_name = env.get("device_name") or next((r.get("device_name") for r in rows if r.get("device_name")), None)
    date = (merged.get("datetime") or dt.datetime.now(dt.timezone.utc).isoformat())[:10]
    timings = sorted({r.get("timing") for r in rows if r.get("timing")})
    quick = any(r.get("quick") for r in rows)
    gpu = f", sm {env['device_capability']}, {env.get('device_memory_gib')} GiB" if env.get("device_capability") else ""
    backends = ", ".join(env.get("backends_available") or []) or env.get("backends_error", "?")
    tf32 = "; TF32 allowed for fp32 convolutions" if env.get("allow_tf32_cudnn") else ""
    lines = [
        f"# inception_fast benchmarks: {device_name or 'unknown device'}\n",
        f"- date: {date} (UTC)",
        f"- device: {device_name or '?'} ({env.get('device', '?')}{gpu})",
        f"- torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda') or 'none'}, "
        f"cuDNN {env.get('cudnn') or '—'}), triton {env.get('triton') or 'absent'}, "
        f"torchvision {env.get('torchvision') or '?'}, inception_fast {env.get('inception_fast') or '?'}, "
        f"Python {env.get('python', '?')}",
        f"- backends available: {backends}",
        f"- timing: {', '.join(timings) or '?'} (median of time_fn samples after warm-up){tf32}",
        f"- mode: {'QUICK (tiny sizes, smoke run: numbers mean nothing)' if quick else 'full'}",
        f"- sources: {', '.join(merged['sources']) or 'none'}",
    ]
    if merged["missing"]:
        lines.append(f"- missing inputs: {'; '.join(merged['missing'])}")
    return "\n".join(lines) + "\n"


def _block_groups(rows):
    """Block rows split by (batch, timing), largest batch first: batch 256 with CUDA events and
    batch 1 under CUDA graphs are separate tables."""
    groups = {}
    for r in rows:
        # A case that could not be captured stays in its graph-timed table (and is listed there).
        timing = "cuda_graph" if r.get("cuda_graph_error") else r.get("timing")
        groups.setdefault((r.get("batch"), timing), []).append(r)
    return [groups[k] for k in sorted(groups, key=lambda k: (-(k[0] or 0), str(k[1])))] or [[]]


def markdown(merged):
    return "\n".join(
        [
            header_markdown(merged),
            throughput_markdown(_rows(merged, "throughput")),
            *(blocks_markdown(g) for g in _block_groups(_rows(merged, "block"))),
            tuning_markdown(_rows(merged, "throughput") + _rows(merged, "block")),
        ]
    )


_TILE_ABBREV = (
    ("BLOCK_M_POOL", "Mp"),
    ("BLOCK_K_POOL", "Kp"),
    ("POOL_STAGES", "ps"),
    ("BLOCK_M", "M"),
    ("BLOCK_N", "N"),
    ("BLOCK_K", "K"),
)
# Launch 1 and 2 pass their channel counts divided by C_UNIT (inception_fast.backends.triton._common.row_unit):
# the arguments named *_DIV_UNIT_SUFFIX, and these names in results recorded before the arguments were renamed.
_DIV_UNIT_SUFFIX = "_div_unit"
_DIVIDED_BY_C_UNIT = ("CIN", "NR", "CH1", "NP", "CIN3", "CIN5")
_HIDDEN_KEYS = ("ROW_UNIT", "W_UNIT", "C_UNIT", "DOT_PRECISION")


def _config_short(name):
    for long, short in _TILE_ABBREV:
        name = name.replace(long + "=", short + "=")
    return name


def _shape_item(key, value, unit):
    if key.endswith(_DIV_UNIT_SUFFIX):
        return f"{key[: -len(_DIV_UNIT_SUFFIX)]}={value * unit}"
    return f"{key}={value * unit if key in _DIVIDED_BY_C_UNIT else value}"


def _shape_short(shape):
    unit = shape.get("C_UNIT", 1)
    return " ".join(_shape_item(k, v, unit) for k, v in shape.items() if k not in _HIDDEN_KEYS)


def tuning_markdown(rows):
    """The Triton autotuners' choices per kernel and shape, with every config's time where the
    run benchmarked them (bench_* record triton_tuning for the case that first launched a shape)."""
    seen, table = set(), []
    for r in rows:
        where = r.get("block") or MODEL_LABELS.get(r.get("model"), r.get("model"))
        for e in r.get("triton_tuning") or []:
            key = (e["kernel"], json.dumps(e["shape"], sort_keys=True), e.get("dtype"))
            if key in seen:
                continue
            seen.add(key)
            us = e.get("us") or {}
            ranked = sorted(us.items(), key=lambda kv: kv[1])
            times = "; ".join(f"{_config_short(c)}: {t:,.1f}" for c, t in ranked) if ranked else "—"
            if ranked and e.get("from_cache"):
                times += " (Triton's disk cache: an earlier step's benchmark)"
            table.append(
                [
                    f"{where} (b{r.get('batch')})",
                    e["kernel"],
                    _shape_short(e["shape"]),
                    e.get("dtype") or "",
                    _config_short(e["chosen"]),
                    times,
                ]
            )
    if not table:
        return ""
    return (
        "## Triton autotuning\n\nWhat each autotuner chose per shape, with every config's median µs from its "
        "benchmark (fastest first).\n\n"
        + _table(["first launched by", "kernel", "shape", "dtype", "chosen", "µs per config"], table)
        + "\n"
    )


def chart(merged, path):
    """Writes the PNG; returns None, or the reason no chart was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib unavailable ({type(exc).__name__}: {exc}); chart skipped"
    thr, blk = _rows(merged, "throughput"), _rows(merged, "block")
    if not thr and not blk:
        return "no results to chart"
    panels = [p for p in (thr, blk) if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    ax_iter = iter(axes[:, 0])
    env = _env(merged)
    if thr:
        ax = next(ax_iter)
        index = throughput_index(thr)
        head = _headline(thr)
        batches = sorted({c[3] for c in index if c[:3] == head}, reverse=True)
        models = _order({m for c, ms in index.items() if c[:3] == head for m in ms}, MODEL_ORDER)
        width = 0.8 / max(len(models), 1)
        for k, m in enumerate(models):
            vals = [(index.get((*head, b), {}).get(m) or {}).get("x_eager") or 0 for b in batches]
            ax.bar([i + k * width for i in range(len(batches))], vals, width, label=MODEL_LABELS.get(m, m))
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(batches))])
        ax.set_xticklabels([f"batch {b}" for b in batches])
        ax.set_ylabel("speedup over torchvision eager")
        ax.set_title(f"GoogLeNet throughput, {env.get('device_name', head[0])}, {head[1]} {head[2]}")
        ax.legend(fontsize=8)
    if blk:
        ax = next(ax_iter)
        index = block_index(blk)
        names = _order(index, BLOCK_ORDER)
        roof = any(r.get("roofline_fraction") is not None for r in blk)
        impls = [
            i
            for i in _order({i for v in index.values() for i in v}, IMPL_ORDER)
            if not (roof is False and i == "torchvision")
        ]
        width = 0.8 / max(len(impls), 1)
        for k, i in enumerate(impls):
            vals = []
            for n in names:
                r = index[n].get(i)
                base = index[n].get("torchvision")
                if r is None:
                    vals.append(0)
                elif roof:
                    vals.append(100 * (r.get("roofline_fraction") or 0))
                else:
                    vals.append(base["median_s"] / r["median_s"] if base else 0)
            ax.bar([j + k * width for j in range(len(names))], vals, width, label=IMPL_LABELS.get(i, i))
        ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels([n.replace("inception", "") for n in names])
        ax.set_ylabel("% of H100 roofline" if roof else "speedup over torchvision block")
        r0 = blk[0]
        ax.set_title(f"per block, {r0['device']} {r0['dtype']} batch {r0['batch']}")
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("json", nargs="+", help="pytest-benchmark JSON files (missing ones are noted and skipped)")
    p.add_argument("--md", help="write the markdown report here")
    p.add_argument("--chart", help="write the PNG chart here (needs matplotlib)")
    p.add_argument("--merged-json", help="write all benchmarks of all inputs as one JSON")
    p.add_argument("--short", action="store_true", help="print a short table (headline config + blocks)")
    p.add_argument("--name", action="store_true", help="print the results base name and exit")
    args = p.parse_args(argv)
    merged = load(args.json)
    if args.name:
        print(result_basename(merged))
        return 0
    for m in merged["missing"]:
        print(f"report: skipped input {m}", file=sys.stderr)
    if args.merged_json:
        with open(args.merged_json, "w") as f:
            json.dump(merged, f, indent=1, default=str)
    text = markdown(merged)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    if args.chart:
        why = chart(merged, args.chart)
        if why:
            print(f"report: {why}", file=sys.stderr)
    if args.short:
        print(throughput_short(_rows(merged, "throughput")))
        print()
        print("\n\n".join(blocks_short(g) for g in _block_groups(_rows(merged, "block"))))
    elif not args.md:
        print(text)
    return 0 if merged["benchmarks"] else 1


if __name__ == "__main__":
    sys.exit(main())
