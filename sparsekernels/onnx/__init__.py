"""ONNX files of sparse models, the sparse convs as custom operators.

    import sparsekernels.onnx as skonnx
    skonnx.export(model, torch.randn(1, 3, 32, 32), "model.onnx")
    nodes = skonnx.read_sparse_convs("model.onnx")        # validated formats
    (y,) = skonnx.reference_evaluator("model.onnx").run(None, {"input": x.numpy()})

:func:`export` writes standard ONNX for everything but the sparse conv
modules (``SparseConv2d`` of any registered kind; a functional
``<slug>_conv2d`` call in a forward is not exported: it derives its format's
topology in the trace). Each module is one node of domain ``"sparsekernels"``
(version 1), op type the kind's module class name (``Block1xNConv2d``,
``StripeConv2d``, ``PatternConv2d``), with

- inputs ``X``, the format's saved index tensors in its ``INDEX_TENSORS``
  order (int32 initializers, e.g. ``row_ptr, col_idx``), ``values`` (an
  initializer in the model's dtype) and the optional bias ``B``;
- int attributes ``in_channels``, ``out_channels``, ``kernel_shape`` [Kh, Kw],
  ``strides``, ``pads`` [top, left, bottom, right] (always symmetric: other
  padding is done by standard nodes before it), ``dilations``, ``group``, then
  the kind's own parameters (1xN: ``n``).

The batch axis of the input and output is dynamic. :func:`read_sparse_convs`
reads those nodes back into the library's formats, each validated by its
format's ``from_state_dict``; :func:`reference_evaluator` runs the file on
``onnx.reference`` with the library's kernels. ONNX Runtime cannot run the
sparse nodes: a custom-operator library for it needs ONNX Runtime's C API
header, which its Python wheel does not ship, so none is provided.
Needs the ``onnx`` extra (``pip install 'sparsekernels[onnx]'``).
"""
from .export import DEFAULT_OPSET, export
from .layout import DOMAIN, DOMAIN_VERSION, Geometry, op_type
from .read import SparseConvNode, read_sparse_convs
from .reference import reference_evaluator, reference_ops

__all__ = ["DEFAULT_OPSET", "DOMAIN", "DOMAIN_VERSION", "Geometry", "SparseConvNode", "export",
           "op_type", "read_sparse_convs", "reference_evaluator", "reference_ops"]
