"""``export`` of pattern-pruned models (PatDNN patterns + connectivity, from
``--method pattern``) to ``PatternConv2d``: the exported net computes what the
pruned dense one does, each layer's format is the saved library's patterns
and ids, and the file loads back through ``load_exported``.

The pruned model is made in milliseconds: the method is prepared on a fresh
model and its sparsifier steps once (no training).
"""
import json

import pytest
import torch

from sparsekernels.formats.pattern import Pattern
from sparsekernels.models import MODELS, get_model
from sparsekernels.nn.pattern import PatternConv2d
from sparsekernels.train.artifacts import load_model, save_model
from sparsekernels.train.config import RunConfig
from sparsekernels.train.export import export, load_exported
from sparsekernels.train.methods import make_method


def pattern_pruned(path, level=0.8, arch="digits_cnn", seed=0):
    torch.manual_seed(seed)
    cfg = RunConfig(method="pattern", arch=arch, pr_target=level, num_patterns=4,
                    inter_func="one_shot")
    model = get_model(arch)
    method = make_method(cfg)
    model = method.prepare(model)
    method.on_epoch_start(0, model)
    model = method.finalize(model)
    save_model(path, model, arch, 10, masks=method.masks(model), method="pattern",
               config=json.dumps(cfg.to_dict()), **method.saved_extras())
    return method


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_exported_pattern_net_equals_the_pruned_dense_net(tmp_path, backend):
    pattern_pruned(tmp_path / "pruned.pt")
    dense, record = load_model(tmp_path / "pruned.pt")
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["sparse_layers"], "export converted no layer"
    model = load_exported(tmp_path / "sparse.pt", backend=backend)
    for name in summary["sparse_layers"]:
        layer = model.get_submodule(name)
        assert isinstance(layer, PatternConv2d)
        saved = record["patterns"][name]
        want = Pattern.from_ids(dense.get_submodule(name).weight.detach(), saved["library"],
                                saved["pattern_id"])
        torch.testing.assert_close(layer.format().to_dense(), want.to_dense(), rtol=0, atol=0)
        assert layer.format().library()[:, 1, 1].all()  # PatDNN: the centre is kept
    x = torch.randn(4, *MODELS["digits_cnn"].input_shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.double().eval()(x), dense.double().eval()(x),
                                   rtol=1e-10, atol=1e-10)
