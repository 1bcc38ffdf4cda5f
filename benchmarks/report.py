#!/usr/bin/env python3
"""pytest-benchmark JSON (from bench_throughput.py / bench_blocks.py) -> markdown and a PNG chart.

    python3 benchmarks/report.py bench.json blocks.json compile.json \
        --ceilings ceilings.json --first first.json \
        --md report.md --chart chart.png --merged-json all.json --short

Reads the headline numbers from each benchmark's extra_info (time_fn medians), not
from pytest-benchmark's wall-clock stats.  Input files that are missing or
unreadable, or of another kind, are reported and skipped, so a suite whose one step failed
still gets a report (where none can be read: one error line, exit code 2).  Needs only the
standard library; the chart needs matplotlib and is
skipped (with a message, not an error) without it.

Sections: the header (device, versions, and the roofline ceilings every fraction used, with
where they came from: measured in the run, ``--ceilings``, or the known-device table of
benchmarks/helpers/roofline.py), throughput, the stages outside the blocks (µs, roofline
fraction, bound, the form FusedGoogLeNet chose), the blocks, every measured choice the run
recorded (``measured_choices`` in extra_info, listed generically per choice object), the time
from a fresh process to the first result (``--first``), and the Triton autotuners' picks.
The merged JSON holds the side inputs too (``ceilings``, ``first_forward``) and is itself a valid
input.
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
    "tv_compile_ro",
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
    "tv_compile_ro": "torch.compile(tv), reduce-overhead, freezing",
    "onnxruntime": "ONNX Runtime (CPU provider)",
    "openvino": "OpenVINO",
}
# The CPU peers each precision's rows are held against (the best of them): benchmarks.helpers.settings.PEER_DTYPES.
CPU_PEERS = {"fp32": ("onnxruntime", "openvino", "tv_compile"), "bf16": ("openvino", "tv_compile")}
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
IMPL_ORDER = [
    "torchvision",
    "torch",
    "triton",
    "cuda",
    "cpp",
    "onednn",
    "hopper",
    "hopper_tma2",
    "launch1_ext",
    "launch1_triton",
    "launch1_tma",
    "launch1_reduce",
    "launch1_pool",
]
IMPL_LABELS = {
    "torchvision": "torchvision (BN, cat)",
    "torch": "torch (ATen, folded)",
    "triton": "triton",
    "cuda": "cuda",
    "cpp": "cpp",
    "onednn": "onednn (prepacked)",
    "launch1_ext": "launch-1 ext",
    "launch1_triton": "launch-1 triton",
    "hopper_tma2": "hopper_tma2 (TMA launch 2)",
    "launch1_tma": "launch-1 hopper (TMA)",
    "launch1_reduce": "launch-1 triton, 1x1s alone",
    "launch1_pool": "launch-1 triton, pool branch alone",
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
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("benchmarks", []), list)
            or not isinstance(data.get("machine_info") or {}, dict)
            or not ("benchmarks" in data or any(data.get(side) for side in SIDES))
        ):
            merged["missing"].append(f"{path} (not a pytest-benchmark JSON object)")
            continue
        merged["sources"].append(os.path.basename(path))
        info = data.get("machine_info") or {}
        if isinstance(data.get("skipped_candidates"), dict):  # a merged JSON given back: its inputs'
            for source, value in data["skipped_candidates"].items():
                merged.setdefault("skipped_candidates", {}).setdefault(source, value)
        else:
            _note_skips(merged, os.path.basename(path), info.get("inception_fast"))
        if info.get("inception_fast") or not merged["machine_info"]:
            merged["machine_info"] = info if info.get("inception_fast") else (merged["machine_info"] or info)
        merged["datetime"] = merged["datetime"] or data.get("datetime")
        merged.setdefault("version", data.get("version"))
        for side in SIDES:  # a merged JSON given back as input
            if data.get(side) and not merged.get(side):
                merged[side] = data[side]
        benches = data.get("benchmarks", [])
        ours = [b for b in benches if isinstance(b, dict) and _ours(b.get("extra_info", {}))]
        if len(ours) < len(benches):
            left_out = len(benches) - len(ours)
            merged["missing"].append(f"{path} ({left_out} benchmark(s) without this suite's extra_info, left out)")
        for bench in ours:
            extra = bench.get("extra_info", {})
            # The same case timed eagerly and as CUDA-graph replays (or asked for replays and timed
            # eagerly when the capture failed), or at another batch (two files), is two results.
            key = (
                bench.get("fullname") or bench.get("name"),
                extra.get("device"),
                extra.get("timing"),
                bool(extra.get("cuda_graph_error")),
                extra.get("batch"),
                extra.get("cpu_threads") if extra.get("device") == "cpu" else None,
            )
            by_name[key] = bench
    merged["benchmarks"] = list(by_name.values())
    return merged


def _ours(extra) -> bool:
    """Whether a benchmark's extra_info is one this suite writes (or none): a dict whose kind and
    model, where present, are names and whose median_s, where present, is a number."""
    if not isinstance(extra, dict):
        return False
    names = all(isinstance(extra.get(k, ""), str) for k in ("kind", "model", "dtype", "memory_format", "device"))
    median = extra.get("median_s")
    return names and (median is None or (isinstance(median, (int, float)) and not isinstance(median, bool)))


# What each side input must hold to be read: a JSON object with these keys of these types.
SIDE_SHAPES = {"ceilings": {}, "first_forward": {"rows": list}, "cold_start": {"batches": dict}}


# The inputs besides pytest-benchmark's, under these keys in the merged JSON: the ceilings
# (benchmarks/helpers/roofline.py), first_forward.py's rows, bench_block_backward.py's rows (every
# file's, one list) and cold_start.py's.
SIDES = ("ceilings", "first_forward", "train", "cold_start")


def _note_skips(merged, source, env):
    """Notes the INCEPTION_FAST_SKIP_CANDIDATES that ``source`` ran with (its recorded environment
    ``env``), under "skipped_candidates": {source: value}."""
    value = env.get("skipped_candidates") if isinstance(env, dict) else None
    if value:
        merged.setdefault("skipped_candidates", {})[source] = value


def _read_json(merged, path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        merged["missing"].append(f"{path} (not found)")
    except (OSError, ValueError) as exc:
        merged["missing"].append(f"{path} ({type(exc).__name__}: {exc})")
    return None


def load_side(merged, ceilings=None, first=None, train=(), cold_start=None):
    """Adds the side inputs to ``merged`` under SIDES' keys; a missing or unreadable one is noted
    in "missing".  Without a benchmark's machine_info, the header takes the first side input's
    recorded environment (first_forward.py's or bench_block_backward.py's: the device's)."""
    for key, path in (("ceilings", ceilings), ("first_forward", first), ("cold_start", cold_start)):
        data = _read_json(merged, path) if path else None
        shape = SIDE_SHAPES[key]
        if data is not None and not (
            isinstance(data, dict) and all(isinstance(data.get(k), t) for k, t in shape.items())
        ):
            what = {"ceilings": "roofline.py", "first_forward": "first_forward.py", "cold_start": "cold_start.py"}[key]
            merged["missing"].append(f"{path} (not a {what} JSON object)")
            data = None
        if data is not None:
            merged[key] = data
            merged["sources"].append(os.path.basename(path))
            _note_skips(merged, os.path.basename(path), data.get("environment") if isinstance(data, dict) else None)
    for path in train or ():
        data = _read_json(merged, path)
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            if data is not None:
                merged["missing"].append(f"{path} (not a bench_block_backward.py JSON object)")
            continue
        side = merged.setdefault("train", {"environment": data.get("environment") or {}, "rows": []})
        side["rows"] += [r for r in data["rows"] if r not in side["rows"]]  # (a merged JSON may hold them)
        merged["sources"].append(os.path.basename(path))
        _note_skips(merged, os.path.basename(path), data.get("environment"))
    if not _env(merged):  # the device's: cold_start.py records the CPU it compiled on
        for key in ("first_forward", "train"):
            env = (merged.get(key) or {}).get("environment") if isinstance(merged.get(key), dict) else None
            if env:
                merged["machine_info"] = {**merged["machine_info"], "inception_fast": env}
                break
    return merged


def has_results(merged) -> bool:
    """Whether ``merged`` holds anything to report: benchmarks or a side input's rows."""
    return bool(merged["benchmarks"]) or any(merged.get(k) for k in SIDES if k != "ceilings")


def _env(merged):
    return (merged.get("machine_info") or {}).get("inception_fast") or {}


def result_basename(merged):
    return _env(merged).get("result_basename") or "results"


def _rows(merged, kind):
    return [
        b["extra_info"]
        for b in merged["benchmarks"]
        if (b.get("extra_info") or {}).get("kind") == kind
        and b["extra_info"].get("median_s")
        and (kind != "throughput" or "model" in b["extra_info"])  # a throughput row names its model
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
# The torch.compile anchors: default mode (the largest batch) and reduce-overhead (batch 1).
COMPILE_ANCHORS = ("tv_compile", "tv_compile_ro")


def _anchor(index, config):
    """The compile anchor of ``config``: its own, else that of the eager config a CUDA-graph
    config was derived from (graph replays against the compiled model's calls); default mode first."""
    for cfg in (config, _eager_config(config)):
        for m in COMPILE_ANCHORS:
            if m in index.get(cfg, {}):
                return index[cfg][m]
    return None


def throughput_index(rows):
    """{config: {model: row}} plus speedups over torchvision eager and torch.compile."""
    index = {}
    for r in rows:
        index.setdefault(_config(r), {})[r["model"]] = r
    for config, models in index.items():
        eager = models.get("torchvision")
        comp = _anchor(index, config)
        for r in models.values():
            r["x_eager"] = eager["median_s"] / r["median_s"] if eager else None
            r["x_compile"] = comp["median_s"] / r["median_s"] if comp else None
            if r.get("captured_s"):  # the same graph called through CapturedForward, per call
                r["x_compile_captured"] = comp["median_s"] / r["captured_s"] if comp else None
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
        captured = [
            [
                f"b{b}",
                MODEL_LABELS.get(m, m),
                f"{r['median_s'] * 1e3:.3f}",
                f"{r['captured_s'] * 1e3:.3f} ({r['captured_q1_s'] * 1e3:.3f}–{r['captured_q3_s'] * 1e3:.3f})"
                if r.get("captured_s")
                else "failed: " + r["captured_error"].replace("|", "/"),
                _fmt_x(r.get("x_compile_captured")),
            ]
            for b in batches
            for m in models
            for r in [index.get((dev, dtype, fmt, b), {}).get(m) or {}]
            if r.get("captured_s") or r.get("captured_error")
        ]
        if captured:
            out.append(
                "Per call through `graphs.CapturedForward` (the input copied in, the replay, their host "
                "time), as torch.compile's reduce-overhead calls are timed; × compile against that "
                "anchor:\n"
            )
            out.append(_table(["batch", "model", "replay ms", "CapturedForward call ms", "× compile"], captured) + "\n")
    errs = {}
    for r in rows:
        v = r.get("rel_error_vs_torchvision")
        if v is not None:
            key = (r["model"], r["dtype"])
            prev = errs.get(key, 0.0)
            errs[key] = math.nan if math.isnan(v) or math.isnan(prev) else max(prev, v)  # a NaN stays listed
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
    # Results recorded before the generic list (measured_choices, see measured_choices_markdown) carry
    # the stem's, conv2/conv3's, the pools' and the head's choices in stem_conv1 only.
    legacy = not any(r.get("measured_choices") for r in rows)
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
    if stems and legacy:
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
    if convs and legacy:
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
    if pools_head and legacy:
        out.append("The max pools and the head, ATen or Triton, as measured (µs):\n")
        out.append(_table(["config", "stage input", "chosen", "variants (µs)"], [list(t) for t in pools_head]) + "\n")
    compiled = [c for c, ms in index.items() if any(m in ms for m in COMPILE_ANCHORS)]
    if compiled:
        out.append("### Against torch.compile (freezing; default mode, and reduce-overhead at batch 1)\n")
        out.append(
            "Rows marked CUDA graph are graph replays (GPU time, no host time) held against the "
            "compiled model's calls (reduce-overhead replays its own CUDA graphs).\n"
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
        comp_s = [
            f"{MODEL_LABELS[m]} b{c[3]} {index[c][m]['compile_s']:.1f} s"
            for c in sorted(compiled, key=str)
            for m in COMPILE_ANCHORS
            if index[c].get(m, {}).get("compile_s") is not None
        ]
        out.append("Compile time (first call): " + (", ".join(comp_s) or "—") + "\n")
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
    """{(device, dtype, batch): best peer row}: the fastest of CPU_PEERS[dtype] in a CPU's
    channels_last config (where the peers are grouped).  A GPU's torch.compile row is its
    anchor (× compile), not a peer of this table."""
    best = {}
    for (dev, dtype, fmt, batch), models in index.items():
        if fmt != "channels_last" or not str(dev).startswith("cpu"):
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
        "torch.compile with freezing; bf16, the better of OpenVINO bf16 and torch.compile with freezing. "
        "≈: the row's interquartile range overlaps the best peer's, so this run cannot rank the two. "
        "The engines take an NCHW array and pick their own layout.\n",
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
                str(min(top, len(prof.get("kernels", [])))),
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
                extra = f" {_fmt_x(r['x_compile'])}c" if r.get("x_compile") and m not in COMPILE_ANCHORS else ""
                cells.append(f"{_fmt_rate(r['images_per_s'])} {_fmt_x(r['x_eager'])}{extra}")
        table.append([MODEL_LABELS.get(m, m), *cells])
    title = f"img/s, {head[0]} {head[1]} {head[2]} (× over eager; c = over torch.compile)"
    text = title + "\n" + _table(["model", *(f"b{b}" for b in batches)], table)
    graphs = sorted((c for c in index if c[2].endswith("CUDA graph")), key=str)
    for c in graphs:
        cells = []
        for m in _order(index[c], MODEL_ORDER):
            r = index[c][m]
            cell = f"{MODEL_LABELS.get(m, m)} {r['median_s'] * 1e3:.3f}"
            if r.get("x_compile"):
                cell += f" ({_fmt_x(r['x_compile'])} eager compile)"
            if r.get("captured_s"):
                cell += f", per CapturedForward call {r['captured_s'] * 1e3:.3f}"
                if r.get("x_compile_captured"):
                    cell += f" ({_fmt_x(r['x_compile_captured'])})"
            cells.append(cell)
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
            f" (fraction of the roofline: floor = max(FLOPs / FLOP ceiling, bytes / byte ceiling) at "
            f"{_ceiling_text(rows)}, bytes = input + output + weights once)"
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
    short = {
        "torchvision": "tv",
        "launch1_ext": "L1 ext",
        "launch1_triton": "L1 triton",
        "launch1_tma": "L1 tma",
        "launch1_reduce": "L1 1x1s",
        "launch1_pool": "L1 pool",
    }
    return title + "\n" + _table(["block", *(short.get(i, i) for i in impls), "L1 ext/tri"], table)


# ---------------------------------------------------------------------------------------
# stages outside the blocks
# ---------------------------------------------------------------------------------------
STAGE_ORDER = ["conv1", "conv2", "conv3", "maxpool2", "maxpool3", "maxpool4", "head"]
STAGE_LABELS = {
    "conv1": "conv1 + ReLU + maxpool1",
    "conv2": "conv2 (1x1) + ReLU",
    "conv3": "conv3 (3x3) + ReLU",
    "maxpool2": "maxpool2",
    "maxpool3": "maxpool3",
    "maxpool4": "maxpool4",
    "head": "head (avgpool + fc)",
}
STAGE_IMPLS = ["torchvision", "fused"]
STAGE_TARGET = 0.5  # issue 16: every stage outside the blocks at >= 50% of its roofline


def _chosen_text(r):
    """The measured choices a fused stage row recorded: "CHOICE chosen" each, or why there are none."""
    found = r.get("measured_choices")
    if found is None:
        return "—"
    if not found:
        return "— (nothing measured)"
    return "; ".join(f"{c['choice']}: {c['chosen']}" + (" (stored)" if c.get("stored") else "") for c in found)


def _us_pct(r):
    if r is None:
        return "—"
    pct = f" ({_fmt_pct(r['roofline_fraction'])})" if r.get("roofline_fraction") is not None else ""
    return _fmt_us(r["median_s"]) + pct


def stages_markdown(rows):
    if not rows:
        return ""
    index = block_index(rows)
    first = rows[0]
    roof = any(r.get("roofline_fraction") is not None for r in rows)
    graphs = ", CUDA-graph replays" if any(r.get("timing") == "cuda_graph" for r in rows) else ""
    out = [
        f"## Stages outside the blocks ({first['device']}, {first['dtype']}, batch {first['batch']}, "
        f"channels_last{graphs})\n",
        "Each stage alone, in µs"
        + (
            f" (fraction of the roofline: floor = max(FLOPs / FLOP ceiling, bytes / byte ceiling) at "
            f"{_ceiling_text(rows)}; bytes = input + output + weights once; a max pool's comparisons are not "
            f"counted as FLOPs)"
            if roof
            else ""
        )
        + ". torchvision: its layers, BatchNorm unfolded. fused: FusedGoogLeNet (backend auto) through its own "
        "stage hooks, in the form its measured choice picked (the choice and the candidates' µs are listed "
        "under Measured choices).\n",
    ]
    table, below, total, one_way = [], [], {i: 0.0 for i in STAGE_IMPLS}, []
    for st in _order(index, STAGE_ORDER):
        v = index[st]
        tv, fu = v.get("torchvision"), v.get("fused")
        any_row = fu or tv
        if tv and fu:  # the totals hold the stages timed both ways only: their ratio compares like with like
            for i in STAGE_IMPLS:
                total[i] += v[i]["median_s"]
        else:
            one_way.append(st)
        if fu and fu.get("roofline_fraction") is not None and fu["roofline_fraction"] < STAGE_TARGET:
            below.append(f"{st} {_fmt_pct(fu['roofline_fraction'])}")
        table.append(
            [
                STAGE_LABELS.get(st, st),
                f"{any_row['flops'] / 1e9:.3g}",
                f"{any_row['bytes'] / 1e6:.3g}",
                _us_pct(tv),
                _us_pct(fu),
                _fmt_x(tv["median_s"] / fu["median_s"] if tv and fu else None),
                (fu or tv).get("bound") or "—",
                _chosen_text(fu) if fu else "—",
                _fmt_err(fu) if fu else "—",
            ]
        )
    table.append(
        [
            "**all stages outside the blocks**" + (f" (not {', '.join(one_way)}: timed one way)" if one_way else ""),
            "",
            "",
            _fmt_us(total["torchvision"] or None),
            _fmt_us(total["fused"] or None),
            _fmt_x(total["torchvision"] / total["fused"] if total["fused"] and total["torchvision"] else None),
            "",
            "",
            "",
        ]
    )
    out.append(
        _table(
            ["stage", "GFLOP", "MB", "torchvision µs", "fused µs", "× tv", "bound", "fused chose", "rel err"],
            table,
        )
        + "\n"
    )
    if roof:
        out.append(
            f"Target: every stage at ≥ {_fmt_pct(STAGE_TARGET)} of its roofline. "
            + (f"Below it (fused): {', '.join(below)}." if below else "All fused stages measured meet it.")
            + "\n"
        )
    out.append("rel err: ‖fused − torchvision‖/‖torchvision‖ of the stage's output; a record, not a test.\n")
    return "\n".join(out)


def stages_short(rows):
    if not rows:
        return ""
    index = block_index(rows)
    r0 = rows[0]
    roof = any(r.get("roofline_fraction") is not None for r in rows)
    table = [
        [st, *(_us_pct(index[st].get(i)).replace(" (", " ").replace(")", "") for i in STAGE_IMPLS)]
        for st in _order(index, STAGE_ORDER)
    ]
    title = f"µs per stage outside the blocks, {r0['device']} {r0['dtype']} batch {r0['batch']}" + (
        " (% of roofline)" if roof else ""
    )
    return title + "\n" + _table(["stage", "tv", "fused"], table)


# ---------------------------------------------------------------------------------------
# measured choices, first forward
# ---------------------------------------------------------------------------------------
_KEY_HIDDEN = ("device", "dtype", "shape", "stride")


def _key_text(key):
    parts = []
    for k, v in key.items():
        if k in _KEY_HIDDEN or v is None or v is False:
            continue
        dims = isinstance(v, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in v)
        text = "x".join(map(str, v)) if dims else str(v)
        parts.append(f"{k}={text}")
    text = ", ".join(parts).replace("|", "/")
    return text if len(text) <= 140 else text[:137] + "..."


def _unique_choices(rows):
    """(row, choice record, its key) for every measured choice the rows recorded, once per choice
    object and key (the first row that recorded it)."""
    seen = set()
    for r in rows:
        for c in r.get("measured_choices") or []:
            key = c.get("key") or {}
            ident = (c.get("choice"), json.dumps(key, sort_keys=True))
            if ident not in seen:
                seen.add(ident)
                yield r, c, key


def measured_choices_markdown(rows):
    """Every measured choice the rows recorded (``measured_choices``), once per choice and key, per
    device, dtype and batch: what was chosen and every candidate's µs (fastest first)."""
    groups = {}
    for r, c, key in _unique_choices(rows):
        shape = key.get("shape")
        batch = shape[0] if isinstance(shape, list) and shape else None
        groups.setdefault((str(key.get("device", r.get("device"))), str(key.get("dtype", "")), batch), []).append(c)
    if not groups:
        return ""
    out = [
        "## Measured choices\n",
        "What FusedGoogLeNet's measured choices (inception_fast.choices: backend auto per block, the stem's "
        "first conv, conv2/conv3, the pools, the head, and any other MeasuredChoice) picked in this run, with "
        "every candidate's median µs (fastest first; measured as CUDA-graph replays on a GPU). stored: read "
        "from the choice store, so no times.\n",
    ]
    for dev, dtype, batch in sorted(groups, key=lambda g: (g[0], g[1], -(g[2] or 0))):
        table = []
        for c in sorted(groups[(dev, dtype, batch)], key=lambda c: (c["choice"], c.get("where") or "", str(c["key"]))):
            ranked = sorted((c.get("us") or {}).items(), key=lambda kv: kv[1])
            times = ", ".join(f"{n} {us:,.1f}" for n, us in ranked) or ("stored" if c.get("stored") else "—")
            errors = "; ".join(f"{n}: {e}" for n, e in (c.get("errors") or {}).items()).replace("|", "/")
            shape = c["key"].get("shape")
            table.append(
                [
                    c["choice"],
                    c.get("where") or "—",
                    "x".join(map(str, shape)) if isinstance(shape, list) else "—",
                    c["chosen"],
                    times,
                    errors[:200] or "—",
                    _key_text(c["key"]) or "—",
                ]
            )
        out.append(f"### {dev} {dtype} batch {batch if batch is not None else '?'}\n")
        out.append(_table(["choice", "where", "input", "chosen", "µs per candidate", "dropped", "key"], table) + "\n")
    return "\n".join(out)


def measured_choices_short(rows):
    """One line per device, dtype and batch: what each choice object picked, counted over its keys."""
    counts = {}
    for r, c, key in _unique_choices(rows):
        shape = key.get("shape")
        config = (str(key.get("device", r.get("device"))), str(key.get("dtype", "")), shape[0] if shape else None)
        per = counts.setdefault(config, {}).setdefault(c["choice"], {})
        per[c["chosen"]] = per.get(c["chosen"], 0) + 1
    lines = []
    for (dev, dtype, batch), per in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], -(kv[0][2] or 0))):
        text = "; ".join(
            f"{name} " + " ".join(f"{chosen}×{n}" for chosen, n in sorted(picked.items()))
            for name, picked in sorted(per.items())
        )
        lines.append(f"measured choices, {dev} {dtype} b{batch}: {text}")
    return "\n".join(lines)


def _tuned_s(row) -> str:
    return f"{row['to_tuned_s']:.1f}" if "to_tuned_s" in row else ""


def _steady_ms(row) -> str:
    """The forward after tuning, ms (rows from before deferred tuning: their second forward)."""
    s = row.get("steady_forward_s", row.get("second_forward_s"))
    return f"{s * 1e3:.1f}" if s is not None else ""


def first_forward_markdown(first):
    """benchmarks/first_forward.py's rows: a fresh process to the first forward's result."""
    rows = (first or {}).get("rows") or []
    if not rows:
        return ""
    table = []
    for r in rows:
        if r.get("error") and "to_first_result_s" in r:  # cut after its first result
            error = r["error"].replace("|", "/")
            table.append(
                [r.get("kind"), r.get("batch"), r.get("cache"), f"{r['to_first_result_s']:.1f}",
                 f"{r['first_forward_s']:.1f}", error, "", ""]
            )  # fmt: skip
        elif r.get("error"):
            table.append([r.get("kind"), r.get("batch"), r.get("cache"), r["error"].replace("|", "/"), "", "", "", ""])
        else:
            pre = r.get("precompile") or {}
            table.append(
                [
                    r.get("kind"),
                    r.get("batch"),
                    r.get("cache"),
                    f"{r['to_first_result_s']:.1f}",
                    f"{r['first_forward_s']:.1f}",
                    _tuned_s(r),
                    _steady_ms(r),
                    (
                        f"{pre.get('submitted', 0)} / {pre.get('compiled', 0)} / {pre.get('failed', 0)} / "
                        f"{pre.get('on_disk', 0)} ({pre.get('workers_started', 0)} workers)"
                        if pre
                        else ""
                    ),
                ]
            )
    dev = rows[0].get("device", "?")
    return (
        f"## From a fresh process to the first result ({dev}, {rows[0].get('dtype', '?')}, "
        f"{first.get('size', '?')}px)\n\n"
        "cold: empty Triton, inductor and choice caches; warm: the caches the cold process left. "
        "Target (issue 16): ≤ 10 s cold, ≤ 2 s warm. To tuned: until the first forward after the "
        "precompile's workers are done (the one that autotunes and measures the choices; FusedGoogLeNet "
        "runs ATen's computations before it) has its result. Precompile: binaries handed to worker "
        "processes / compiled / failed / found on disk (inception_fast.precompile).\n\n"
        + _table(
            [
                "model",
                "batch",
                "caches",
                "to first result s",
                "of which first forward s",
                "to tuned s",
                "steady forward ms",
                "precompile",
            ],
            table,
        )
        + "\n"
    )


TRAIN_IMPLS = ("reference", "aten_chain", "triton")
TRAIN_LABELS = {"reference": "plain PyTorch", "aten_chain": "ATen op", "triton": "Triton"}


def train_markdown(train):
    """bench_block_backward.py's rows: per block, the block backward and the forward with
    train-mode BatchNorm, median ms (interquartile range) per implementation."""
    rows = (train or {}).get("rows") or []
    if not rows:
        return ""
    table = []
    for r in rows:
        ms, iqr = r.get("ms") or {}, r.get("iqr_ms") or {}
        cells = []
        for impl in TRAIN_IMPLS:
            if impl in ms:
                q = iqr.get(impl) or []
                cells.append(f"{ms[impl]:,.2f}" + (f" ({q[0]:,.2f}–{q[1]:,.2f})" if len(q) == 2 else ""))
            else:
                cells.append((r.get("errors") or {}).get(impl, "—").replace("|", "/"))
        ref = ms.get("reference")
        best = min((ms[i] for i in ("aten_chain", "triton") if i in ms), default=None)
        table.append(
            [r.get("op"), r.get("block"), r.get("size"), r.get("batch"), r.get("dtype"), *cells,
             _fmt_x(ref / best) if ref and best else "—"]
        )  # fmt: skip
    return (
        "## Training kernels per block\n\n"
        "benchmarks/bench_block_backward.py: backward = the block's backward; bn_train = its forward with "
        "train-mode BatchNorm. Median ms (interquartile range) of interleaved rounds; a Triton cell that "
        "holds text is why it did not run (its parity check failed, or no GPU). Speed-up: plain PyTorch's "
        "time over the faster of ours.\n\n"
        + _table(
            ["op", "block", "map", "batch", "dtype", *(f"{TRAIN_LABELS[i]} ms" for i in TRAIN_IMPLS), "speed-up"],
            table,
        )
        + "\n"
    )


def cold_start_markdown(cold):
    """cold_start.py's summary per batch: what a cold first forward compiles and how long."""
    batches = (cold or {}).get("batches") or {}
    if not batches:
        return ""

    def s(v):
        return "—" if v is None else f"{v:,.1f}"

    def n(v):
        return "—" if v is None else str(v)

    table = []
    for batch, entry in batches.items():
        t = entry.get("summary") or {}
        w = t.get("workers") or {}
        if w.get("skipped"):
            workers = f"— ({w['skipped']})"
        else:
            workers = s(w.get("wall")) + (f" ({w.get('compiled')} compiled, {w.get('failed')} failed)" if w else "")
        table.append(
            [batch, n(t.get("binaries")), n(t.get("launches")), n(t.get("keys")), n(t.get("bench_runs")),
             s(t.get("bench_estimate_package_s")), s(t.get("serial_s")), s(t.get("parallel_s")), workers]
        )  # fmt: skip
    return (
        f"## What a cold first forward compiles ({cold.get('arch', '?')}, {cold.get('dtype', '?')}, "
        f"{cold.get('threads', '?')} threads)\n\n"
        "benchmarks/cold_start.py: the Triton binaries, launches, autotune keys and benchmark runs of a cold "
        "first forward; its benchmarks' estimated GPU time at the autotuners' settings; the compile wall time "
        "one by one, all at once on threads, and in the precompile's worker processes (— : not timed).\n\n"
        + _table(
            [
                "batch",
                "binaries",
                "launches",
                "autotune keys",
                "benchmark runs",
                "benchmarks s (est.)",
                "compile s one by one",
                "compile s threads",
                "compile s workers",
            ],
            table,
        )  # fmt: skip
        + "\n"
    )


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
    cudnn = "; TF32 allowed for fp32 convolutions" if env.get("allow_tf32_cudnn") else ""
    if env.get("cudnn_benchmark"):
        cudnn += "; cudnn.benchmark on (cuDNN times its algorithms per shape, for every model)"
    ptxas = f" (ptxas {env['triton_ptxas']})" if env.get("triton_ptxas") else ""
    lines = [
        f"# inception_fast benchmarks: {device_name or 'unknown device'}\n",
        f"- date: {date} (UTC)",
        f"- device: {device_name or '?'} ({env.get('device', '?')}{gpu})",
        f"- torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda') or 'none'}, "
        f"cuDNN {env.get('cudnn') or '—'}), triton {env.get('triton') or 'absent'}{ptxas}, "
        f"torchvision {env.get('torchvision') or '?'}, inception_fast {env.get('inception_fast') or '?'}, "
        f"Python {env.get('python', '?')}",
        f"- backends available: {backends}",
        f"- timing: {', '.join(timings) or '?'} (median of time_fn samples after warm-up){cudnn}",
        f"- mode: {'QUICK (tiny sizes, smoke run: numbers mean nothing)' if quick else 'full'}",
        f"- sources: {', '.join(merged['sources']) or 'none'}",
    ]
    lines += ceilings_lines(merged)
    by_value = {}
    for source, value in (merged.get("skipped_candidates") or {}).items():
        by_value.setdefault(value, []).append(source)
    if by_value:
        text = "; ".join(f"{value} (in {', '.join(sources)})" for value, sources in by_value.items())
        lines.append(
            f"- candidates not measured (INCEPTION_FAST_SKIP_CANDIDATES: one that left the CUDA context "
            f"unusable earlier in the run, or one the caller named): {text}"
        )
    if merged["missing"]:
        lines.append(f"- missing inputs: {'; '.join(merged['missing'])}")
    return "\n".join(lines) + "\n"


# Rows recorded before the ceilings' source was (results up to 2026-11-28, H100 runs).
_UNRECORDED_SOURCE = "source not recorded with the rows (results before 2026-12-02 used the H100's measured ceilings)"


def _ceilings_used(rows):
    """{(TFLOP/s, GB/s, source)} of the ceilings the rows' roofline figures used."""
    return {
        (r["ceiling_tflops"], r["ceiling_gbps"], r.get("ceiling_source") or _UNRECORDED_SOURCE)
        for r in rows
        if r.get("ceiling_tflops") and r.get("ceiling_gbps")
    }


def _ceiling_text(rows):
    """ "788 TFLOP/s, 4,300 GB/s" (several: joined by " or ") of the ceilings the rows used."""
    used = sorted(_ceilings_used(rows), key=str)
    return " or ".join(f"{t:.0f} TFLOP/s, {g:,.0f} GB/s" for t, g, _ in used) or "?"


def ceilings_lines(merged):
    """The header's lines on the roofline ceilings: which the fractions used and where they came from."""
    rows = [b.get("extra_info") or {} for b in merged["benchmarks"]]
    used = sorted(_ceilings_used(rows), key=str)
    lines = [
        f"- roofline ceilings: {t:.0f} TFLOP/s dense bf16 GEMM, {g:,.0f} GB/s device copy (read + write): {src}"
        for t, g, src in used
    ]
    if not used:
        lines.append(
            "- roofline: none (roofline fractions are given for bf16/fp16 work on a CUDA device with known "
            "ceilings only)"
        )
    measured = merged.get("ceilings") or {}
    if measured.get("gemm") and measured.get("copy"):
        gemm, copy = measured["gemm"], measured["copy"]
        lines.append(
            f"- ceilings measured in this run on {measured.get('device_name', '?')}: "
            f"{measured['flop_per_s'] / 1e12:.0f} TFLOP/s ({gemm.get('what')}: median {gemm['median_s'] * 1e3:.3f} ms "
            f"of {gemm.get('repeats')}), {measured['byte_per_s'] / 1e9:,.0f} GB/s ({copy.get('what')}: median "
            f"{copy['median_s'] * 1e3:.3f} ms of {copy.get('repeats')})"
        )
    return lines


def _block_groups(rows):
    """Block rows split by (batch, timing), largest batch first: batch 256 with CUDA events and
    batch 1 under CUDA graphs are separate tables."""
    groups = {}
    for r in rows:
        # A case that could not be captured stays in its graph-timed table (and is listed there).
        timing = "cuda_graph" if r.get("cuda_graph_error") else r.get("timing")
        groups.setdefault((r.get("batch"), timing), []).append(r)
    return [groups[k] for k in sorted(groups, key=lambda k: (-(k[0] or 0), str(k[1])))] or [[]]


def side_markdown(merged) -> list:
    """The side inputs' sections: first forward, cold start, training kernels ("" where absent)."""
    return [
        first_forward_markdown(merged.get("first_forward")),
        cold_start_markdown(merged.get("cold_start")),
        train_markdown(merged.get("train")),
    ]


def markdown(merged):
    everything = _rows(merged, "throughput") + _rows(merged, "stage") + _rows(merged, "block")
    # A report of side inputs only (the GPU suite's check call) has no benchmark sections.
    benchmarked = [
        throughput_markdown(_rows(merged, "throughput")),
        *(stages_markdown(g) for g in _block_groups(_rows(merged, "stage"))),
        *(blocks_markdown(g) for g in _block_groups(_rows(merged, "block"))),
        measured_choices_markdown(everything),
    ]
    return "\n".join(
        part
        for part in [
            header_markdown(merged),
            *(benchmarked if merged["benchmarks"] else ()),
            *side_markdown(merged),
            tuning_markdown(everything),
        ]
        if part
    )


_TILE_ABBREV = (
    ("BLOCK_M_POOL", "Mp"),
    ("BLOCK_K_POOL", "Kp"),
    ("POOL_STAGES", "ps"),
    ("POOL_SPLIT_K", "pk"),
    ("POOL_L1", "pl1"),
    ("A_L1", "l1"),
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


def _stage_panel(ax, rows):
    """Bars per stage outside the blocks: % of the roofline (on a GPU), else × torchvision's time."""
    index = block_index(rows)
    names = _order(index, STAGE_ORDER)
    roof = any(r.get("roofline_fraction") is not None for r in rows)
    impls = [i for i in STAGE_IMPLS if any(i in index[n] for n in names) and (roof or i != "torchvision")]
    width = 0.8 / max(len(impls), 1)
    for k, i in enumerate(impls):
        vals = []
        for n in names:
            r, base = index[n].get(i), index[n].get("torchvision")
            if r is None:
                vals.append(0)
            elif roof:
                vals.append(100 * (r.get("roofline_fraction") or 0))
            else:
                vals.append(base["median_s"] / r["median_s"] if base else 0)
        ax.bar([j + k * width for j in range(len(names))], vals, width, label=i)
    if roof:
        ax.axhline(100 * STAGE_TARGET, color="black", lw=0.8, ls="--", label="target")
    else:
        ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names)
    ax.set_ylabel("% of roofline" if roof else "speedup over torchvision's layers")
    r0 = rows[0]
    ax.set_title(f"stages outside the blocks, {r0['device']} {r0['dtype']} batch {r0['batch']}")
    ax.legend(fontsize=8)


def chart(merged, path):
    """Writes the PNG; returns None, or the reason no chart was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib unavailable ({type(exc).__name__}: {exc}); chart skipped"
    thr, blk, stg = _rows(merged, "throughput"), _rows(merged, "block"), _rows(merged, "stage")
    if not thr and not blk and not stg:
        return "no results to chart"
    # One batch per panel: the largest (the blocks' and stages' batch-1 runs are in the tables).
    blk = _block_groups(blk)[0] if blk else blk
    stg = _block_groups(stg)[0] if stg else stg
    panels = [p for p in (thr, stg, blk) if p]
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
    if stg:
        _stage_panel(next(ax_iter), stg)
    if blk:
        ax = next(ax_iter)
        index = block_index(blk)
        names = _order(index, BLOCK_ORDER)
        roof = any(r.get("roofline_fraction") is not None for r in blk)
        # Without a roofline the bars are speedups over torchvision's whole block, so the rows of
        # one launch alone (launch1_*: a part of the block) are left out.
        impls = [
            i
            for i in _order({i for v in index.values() for i in v}, IMPL_ORDER)
            if roof or (i != "torchvision" and not i.startswith("launch1_"))
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
        ax.set_ylabel("% of roofline" if roof else "speedup over torchvision block")
        r0 = blk[0]
        ax.set_title(f"per block, {r0['device']} {r0['dtype']} batch {r0['batch']}")
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")  # the name as given: no ".png" appended
    plt.close(fig)
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument(
        "json",
        nargs="*",
        help="pytest-benchmark JSON files (missing ones are noted and skipped); none where "
        "the side inputs below are the run's results",
    )
    p.add_argument("--md", help="write the markdown report here")
    p.add_argument("--chart", help="write the PNG chart here (needs matplotlib)")
    p.add_argument("--merged-json", help="write all benchmarks of all inputs as one JSON")
    p.add_argument("--short", action="store_true", help="print a short table (headline config + blocks)")
    p.add_argument("--name", action="store_true", help="print the results base name and exit")
    p.add_argument(
        "--ceilings", help="the roofline ceilings measured in the run (python -m benchmarks.helpers.roofline)"
    )
    p.add_argument("--first", help="benchmarks/first_forward.py's --json output")
    p.add_argument(
        "--train", action="append", help="benchmarks/bench_block_backward.py's --json output (repeatable: each --op)"
    )
    p.add_argument("--cold-start", help="benchmarks/cold_start.py's --json output")
    args = p.parse_args(argv)
    if not (args.json or args.first or args.train or args.cold_start):
        p.error("nothing to report: give benchmark JSON files or --first, --train or --cold-start")
    merged = load_side(
        load(args.json), ceilings=args.ceilings, first=args.first, train=args.train, cold_start=args.cold_start
    )
    if args.name:
        print(result_basename(merged))
        return 0
    for m in merged["missing"]:
        print(f"report: skipped input {m}", file=sys.stderr)
    if not merged["sources"]:
        p.error(f"no input could be read: {'; '.join(merged['missing'])}")
    for flag, path in (("--md", args.md), ("--chart", args.chart), ("--merged-json", args.merged_json)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            p.error(f"{flag} {path}: no directory {folder}")
        if path and os.path.isdir(path):
            p.error(f"{flag} {path}: a directory; give a file name")
    try:
        if args.merged_json:
            with open(args.merged_json, "w") as f:
                json.dump(merged, f, indent=1, default=str)
        text = markdown(merged)
        if args.md:
            with open(args.md, "w") as f:
                f.write(text)
    except OSError as exc:
        p.error(f"cannot write {exc.filename or args.md or args.merged_json}: {exc.strerror or exc}")
    if args.chart:
        try:
            why = chart(merged, args.chart)
        except OSError as exc:
            p.error(f"cannot write {exc.filename or args.chart}: {exc.strerror or exc}")
        if why:
            print(f"report: {why}", file=sys.stderr)
    if not args.short:
        if not args.md:
            print(text)
        return 0 if has_results(merged) else 1
    if merged["benchmarks"]:
        print(throughput_short(_rows(merged, "throughput")))
        print()
        stage_groups = [stages_short(g) for g in _block_groups(_rows(merged, "stage"))]
        print(
            "\n\n".join(
                [*(t for t in stage_groups if t), *(blocks_short(g) for g in _block_groups(_rows(merged, "block")))]
            )
        )
        picked = measured_choices_short(_rows(merged, "throughput") + _rows(merged, "stage") + _rows(merged, "block"))
        if picked:
            print(picked)
        used = _ceilings_used([b.get("extra_info") or {} for b in merged["benchmarks"]])
        for t, g, src in sorted(used, key=str):
            print(f"roofline ceilings: {t:.0f} TFLOP/s, {g:,.0f} GB/s; {src}")
    # The side inputs' tables are short already.
    for part in filter(None, side_markdown(merged)):
        print(part)
    return 0 if has_results(merged) else 1


def _run() -> int:
    """``main()`` as a command: a standard output that cannot be written (a full disk) is one error
    line and exit code 1, one whose reader left (``| head``) ends quietly with 1 (the package's
    ``cli.run_command`` does this for the jobs; this script imports nothing beyond the standard
    library)."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except OSError as exc:
        if exc.filename is not None:  # a file's own error (main names those itself): not ours
            raise
        if not isinstance(exc, BrokenPipeError):
            sys.stderr.write(f"error: writing standard output: {exc.strerror or exc}\n")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush cannot fail
        return 1


if __name__ == "__main__":
    sys.exit(_run())
