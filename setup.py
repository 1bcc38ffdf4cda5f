"""Builds the optional compiled extension ``inception_fast._C`` (csrc/).

* A CUDA build (CUDAExtension: CPU + CUDA kernels) when torch was built with
  CUDA and nvcc plus the CUDA headers are found under
  torch.utils.cpp_extension.CUDA_HOME (unset, /usr/local/cuda is tried first).
* Otherwise a CPU-only build (CppExtension).
* Nothing at all with INCEPTION_FAST_BUILD_EXT=0, or when no C++ compiler is
  found; the package then runs on its "torch" (and "triton") backends.

INCEPTION_FAST_BUILD_EXT: unset = build if possible and warn (not fail) when the
build fails; "1" = the build must succeed; "0" = skip.  INCEPTION_FAST_CUDA=0
forces the CPU-only build.  TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0+PTX"
(the kernels use sm_80 mma.sync / cp.async / ldmatrix; the PTX lets newer GPUs
JIT them).

    CUDA_HOME=/usr/local/cuda pip install --no-build-isolation -e .
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CPU_SOURCES = ["csrc/module.cpp", "csrc/cpu/reduce_pool.cpp", "csrc/cpu/branch_convs.cpp", "csrc/cpu/max_pool.cpp"]
CUDA_SOURCES = ["csrc/cuda/ops.cpp", "csrc/cuda/conv_gemm.cu"]
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _note(msg: str) -> None:
    print(f"inception_fast setup: {msg}", file=sys.stderr)


def _have_cxx() -> bool:
    candidates = [os.environ.get("CXX"), "c++", "g++", "clang++"]
    if sys.platform == "win32":
        candidates.insert(1, "cl")
    return any(c and shutil.which(c.split()[0]) for c in candidates)


def _openmp_compiles() -> bool:
    """Whether the C++ compiler builds and links an OpenMP program (clang without libomp does not)."""
    import subprocess
    import tempfile

    cxx = (os.environ.get("CXX") or "c++").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "omp.cpp"
        src.write_text("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            run = subprocess.run([*cxx, "-fopenmp", str(src), "-o", str(Path(tmp) / "omp")], capture_output=True)
        except OSError:
            return False
    return run.returncode == 0


def _is_cuda_toolkit(home) -> bool:
    """nvcc and the runtime headers: what a CUDAExtension build needs from CUDA_HOME."""
    if not home:
        return False
    nvcc = Path(home) / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")
    return nvcc.exists() and (Path(home) / "include" / "cuda_runtime_api.h").exists()


def _default_cuda_home() -> None:
    # Without CUDA_HOME, torch guesses from the nvcc on PATH, which can be a wrapper script in
    # /usr/local/bin (then it picks /usr/local, which has neither headers nor cudart).
    if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
        if _is_cuda_toolkit("/usr/local/cuda"):
            os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _extension_setup() -> dict:
    mode = os.environ.get("INCEPTION_FAST_BUILD_EXT", "").strip()
    if mode == "0":
        _note("INCEPTION_FAST_BUILD_EXT=0: not building the compiled extension")
        return {}
    strict = mode == "1"
    _default_cuda_home()
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:  # building without torch: a pure-Python install
        if strict:
            raise
        warnings.warn(f"inception_fast: torch is not importable ({exc}); skipping the compiled extension")
        return {}
    if not _have_cxx():
        if strict:
            raise RuntimeError("INCEPTION_FAST_BUILD_EXT=1 but no C++ compiler was found")
        warnings.warn("inception_fast: no C++ compiler found; skipping the compiled extension")
        return {}

    toolkit = CUDA_HOME if _is_cuda_toolkit(CUDA_HOME) else None
    use_cuda = (
        os.environ.get("INCEPTION_FAST_CUDA", "1") != "0" and torch.version.cuda is not None and toolkit is not None
    )

    # -g0 drops the -g that Python's own CFLAGS add: a third of the compile time and most of the .so.
    cxx_flags = ["-O3", "-g0"] if sys.platform != "win32" else ["/O2"]
    # OpenMP for at::parallel_for in the CPU kernels (csrc/cpu/max_pool.cpp): without it the loop
    # runs on one thread.  Linux torch wheels ship libgomp.so.1, which the extension then shares
    # (one thread pool, sized by torch.set_num_threads).
    link_flags = []
    if sys.platform.startswith("linux"):
        if _openmp_compiles():
            cxx_flags.append("-fopenmp")
            link_flags.append("-fopenmp")
        else:
            _note("the C++ compiler builds no OpenMP program: the CPU max pool runs on one thread")
    sources = list(CPU_SOURCES)
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
        _note(f"CUDA build with the toolkit in {toolkit}, TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
        ext = CUDAExtension(
            "inception_fast._C",
            sources + CUDA_SOURCES,
            define_macros=[("INCEPTION_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
            extra_link_args=link_flags,
        )
    else:
        why = (
            "torch has no CUDA"
            if torch.version.cuda is None
            else f"no nvcc + CUDA headers under CUDA_HOME={CUDA_HOME}"
            if toolkit is None
            else "INCEPTION_FAST_CUDA=0"
        )
        _note(f"CPU-only build ({why})")
        ext = CppExtension(
            "inception_fast._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags
        )

    class OptionalBuildExtension(BuildExtension):
        """Turns a failed build into a warning unless INCEPTION_FAST_BUILD_EXT=1."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler or linker failure
                if strict:
                    raise
                warnings.warn(
                    f"inception_fast: building the compiled extension failed ({exc}); "
                    "the torch / triton backends still work"
                )

        def build_extension(self, ext_):
            try:
                super().build_extension(ext_)
            except Exception as exc:  # noqa: BLE001
                if strict:
                    raise
                warnings.warn(
                    f"inception_fast: building {ext_.name} failed ({exc}); the torch / triton backends still work"
                )

    return {"ext_modules": [ext], "cmdclass": {"build_ext": OptionalBuildExtension}}


setup(**_extension_setup())
