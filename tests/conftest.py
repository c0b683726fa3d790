import os

import torch

# Triton kernels run on the CPU only under the interpreter, which must be
# chosen before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# fp32 results are compared with tight tolerances: no TF32 in the references.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(autouse=True)
def poison_uninitialised_memory():
    """Every torch.empty / at::empty (the kernels' outputs too) starts as NaN,
    so an output element a kernel forgets to write fails the comparison."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(False)
