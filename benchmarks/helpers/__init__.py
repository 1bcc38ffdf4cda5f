"""The one helper package of the benchmarks; every benchmark file imports from its modules.

* ``settings``: the environment variables the benchmarks read, ``Settings``, the case grids.
* ``environment``: versions, device and the results base name
  (``python -m benchmarks.helpers.environment [env|name] [--quick]`` prints them).
* ``models``: calibrated torchvision weights, the cached models and blocks, example inputs,
  backend availability.
* ``shapes``: per-block and per-stage (outside the blocks) input/output and conv shapes, taken
  with forward hooks.
* ``roofline``: work counts (FLOPs, bytes), the device's ceilings (measured in the run:
  ``python -m benchmarks.helpers.roofline --json ceilings.json``, else the known-device table) and
  the fraction of that roofline.
* ``measure``: the bridge from ``inception_fast.timing.time_fn`` to pytest-benchmark (median and spread), and parity.
* ``peers``: the CPU peers, ONNX Runtime and OpenVINO, running torchvision's model exported to ONNX.
* ``profiling``: torch.profiler time per kernel name.
* ``choices``: what the Triton autotuners and the package's measured choices (every
  ``MeasuredChoice`` of the loaded package, found without a list of names) picked.
"""
