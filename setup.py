"""Build sparsekernels and its compiled module sparsekernels._C.

Install with ``pip install --no-build-isolation -e .`` against the torch you
already have (build isolation would pull a multi-GB CUDA torch).

The CPU kernels are always built. The CUDA kernels are added when torch is a
CUDA build and nvcc is found (CUDA_HOME); without nvcc you get a warning and a
working CPU build. Environment switches:

- ``SPARSEKERNELS_FORCE_CPU=1``  build CPU only even where CUDA is available
- ``SPARSEKERNELS_FORCE_CUDA=1`` build CUDA even if torch sees no GPU (needs nvcc)
- ``TORCH_CUDA_ARCH_LIST``       CUDA archs (default "8.0;9.0a"); a plain "9.0" is
                                 built as "9.0a", the Hopper target whose wgmma the
                                 sm_90 1xN forward needs (its machine code runs on
                                 9.0 devices only, as sm_90 code does)
- ``SPARSEKERNELS_CUTLASS_INCLUDE`` the CUTLASS/CuTe include folder (default: the
                                 one in the installed ``nvidia-cutlass`` package;
                                 ``pip install --no-deps nvidia-cutlass``). Without
                                 it the CUDA build leaves the Hopper kernel out.
- ``MAX_JOBS``                   parallel compile jobs (read by torch's ninja build)
- ``NVCC_THREADS``               nvcc --threads per job (default 2)
- ``SPARSEKERNELS_SANITIZE=1``   CPU build under AddressSanitizer + UBSan
                                 (what ``scripts/sanitize.sh`` runs the tests against)
"""
import glob
import os
import warnings

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0a"
# The Hopper kernel; the only source that needs the CuTe headers.
SM90_SOURCE = "csrc/cuda/block1xn/block1xn_forward_sm90.cu"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def want_cuda() -> bool:
    if _flag("SPARSEKERNELS_FORCE_CPU"):
        return False
    if torch.version.cuda is None:
        if _flag("SPARSEKERNELS_FORCE_CUDA"):
            warnings.warn("SPARSEKERNELS_FORCE_CUDA=1 but this torch has no CUDA: building CPU only")
        return False
    if CUDA_HOME is None:
        warnings.warn("torch has CUDA but nvcc was not found (CUDA_HOME unset): building CPU only")
        return False
    return True


def cutlass_include():
    """The folder holding cute/ and cutlass/, or None."""
    path = os.environ.get("SPARSEKERNELS_CUTLASS_INCLUDE")
    if path is None:
        try:
            import cutlass_library
        except ImportError:
            return None
        path = os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include")
    return path if os.path.isfile(os.path.join(path, "cute", "tensor.hpp")) else None


def hopper_arch_list(archs: str) -> str:
    """archs with every plain 9.0 turned into 9.0a ("9.0+PTX" keeps its
    portable PTX and gains the 9.0a machine code beside it)."""
    out = []
    for arch in (a.strip() for a in archs.replace(" ", ";").split(";")):
        if arch in ("9.0", "9.0+PTX") and "9.0a" not in out:
            out.append("9.0a")
        if arch and arch != "9.0" and arch not in out:
            out.append(arch)
    return ";".join(out)


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extension():
    with_cuda = want_cuda()
    sources = rel(glob.glob(f"{ROOT}/python_bindings/*.cpp")
                  + glob.glob(f"{ROOT}/csrc/cpu/**/*.cpp", recursive=True))
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    link = ["-fopenmp"]
    if _flag("SPARSEKERNELS_SANITIZE"):
        # vptr is off: torch's own classes are not built with UBSan's type info.
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize=vptr",
                    "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
        cxx, link, with_cuda = ["-O1", "-std=c++17", "-fopenmp"] + sanitize, link + sanitize, False
    # csrc/include holds the torch-free public headers (sparsekernels/...);
    # csrc is the root of the kernels' own paths (cpu/..., cuda/...).
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
    if not with_cuda:
        return CppExtension(
            "sparsekernels._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=link,
        )
    archs = hopper_arch_list(os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS))
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    print(f"sparsekernels: building CUDA kernels for TORCH_CUDA_ARCH_LIST={archs}")
    cu = rel(glob.glob(f"{ROOT}/csrc/cuda/**/*.cu", recursive=True))
    macros = ["-DSK_WITH_CUDA", f'-DSK_CUDA_VERSION="{torch.version.cuda}"']
    cutlass = cutlass_include()
    if cutlass is None:
        warnings.warn("CUTLASS/CuTe headers not found (pip install --no-deps nvidia-cutlass, or set "
                      "SPARSEKERNELS_CUTLASS_INCLUDE): building without the Hopper (sm_90a) 1xN forward")
        cu.remove(SM90_SOURCE)
    else:
        print(f"sparsekernels: CuTe headers from {cutlass}")
        include_dirs.append(cutlass)
        macros.append("-DSK_WITH_SM90")
    sources += cu
    nvcc = ["-O3", "-std=c++17", "-lineinfo",
            f"--threads={os.environ.get('NVCC_THREADS', '2')}"] + macros
    return CUDAExtension(
        "sparsekernels._C", sources, include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx + macros, "nvcc": nvcc}, extra_link_args=link,
    )


setup(
    name="sparsekernels",
    version="0.1.0",
    description="Structured-sparse (1xN block) conv2d kernels for pruned CNNs",
    packages=find_packages(include=["sparsekernels", "sparsekernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    # Each optional import, by the extra that installs it (sparsekernels.optional
    # names the extra when one is missing): the core needs torch and numpy only.
    extras_require={
        "triton": ["triton"],  # the "triton" backend (sparsekernels/triton)
        "test": ["pytest", "hypothesis", "expecttest"],
        # sparsekernels.onnx and train.export's export_onnx; onnxruntime runs
        # the standard (dense-equivalent) files, not the sparse nodes
        "onnx": ["onnx", "onnxruntime"],
        "bench": ["matplotlib", "tqdm", "onnx", "onnxruntime"],  # plots, progress, latency
        "data": ["scikit-learn", "pillow"],  # digits (sklearn), image transforms and folders
        "train": ["scikit-learn", "pillow", "pyyaml", "tqdm"],  # its data, YAML configs, progress
    },
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
