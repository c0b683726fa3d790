"""The model zoo: shapes, the published parameter counts, fx tracing, the registry."""
import pytest
import torch
import torch.fx

from sparsekernels.models import MODELS, ModelSpec, get_model

# ImageNet models run at 64x64 here (all of them accept it) to keep the suite fast.
SMALL_INPUT = {"resnet18": (3, 64, 64), "resnet50": (3, 64, 64), "mobilenet_v1": (3, 64, 64),
               "mobilenet_v2": (3, 64, 64), "mobilenet_v3_small": (3, 64, 64),
               "mobilenet_v3_large": (3, 64, 64)}

PARAMS = {
    # CIFAR ResNets with option A (parameter-free) shortcuts, as counted by
    # akamaster/pytorch_resnet_cifar10; option B adds 2,752 (see below).
    "resnet20": 269_722,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "vgg16_bn": 14_724_042,
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,  # torchvision's counts
    "mobilenet_v3_small": 2_542_856,
    "mobilenet_v3_large": 5_483_032,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "lenet_300_100": 266_610,
    "lenet5": 431_080,
    "digits_cnn": 56_554,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_every_arch_has_a_count_and_a_spec():
    assert set(PARAMS) == set(MODELS)
    assert all(isinstance(spec, ModelSpec) for spec in MODELS.values())


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_param_count(arch):
    assert n_params(get_model(arch)) == PARAMS[arch]


@pytest.mark.parametrize("arch,count", [("resnet20", 272_474), ("resnet56", 855_770),
                                        ("resnet110", 1_730_714)])
def test_cifar_resnet_shortcut_b_adds_projection_params(arch, count):
    model = get_model(arch, shortcut="B")
    assert n_params(model) == count
    assert isinstance(model.layer2[0].shortcut[0], torch.nn.Conv2d)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_forward_and_fx_trace(arch):
    spec = MODELS[arch]
    torch.manual_seed(0)
    model = get_model(arch).eval()
    x = torch.randn(2, *SMALL_INPUT.get(arch, spec.input_shape))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, spec.num_classes)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(traced(x), y, rtol=0, atol=0)


def test_resnet50_full_resolution():
    with torch.no_grad():
        assert get_model("resnet50").eval()(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_cifar_shortcut_a_keeps_the_input_centred_and_zero_pads():
    block = get_model("resnet20").layer2[0]
    x = torch.randn(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


@pytest.mark.parametrize("arch", ["resnet20", "digits_cnn", "mobilenet_v3_small"])
def test_seeded_builds_are_identical(arch):
    torch.manual_seed(3)
    a = get_model(arch).state_dict()
    torch.manual_seed(3)
    b = get_model(arch).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchvision_state_dict_names():
    keys = set(get_model("resnet50").state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight",
            "layer1.0.downsample.0.weight", "layer4.0.downsample.1.bias", "fc.weight"} <= keys
    assert get_model("resnet50").layer2[0].conv2.stride == (2, 2)  # v1.5
    keys = set(get_model("mobilenet_v2").state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.2.conv.0.1.running_mean",
            "features.2.conv.2.weight", "features.2.conv.3.bias", "features.18.0.weight",
            "classifier.1.weight"} <= keys
    keys = set(get_model("mobilenet_v3_large").state_dict())
    assert {"features.0.0.weight", "features.4.block.2.fc1.weight", "features.4.block.3.1.bias",
            "features.16.0.weight", "classifier.0.weight", "classifier.3.weight"} <= keys


def test_digits_cnn_channels_fit_1xn_up_to_32():
    convs = [m for m in get_model("digits_cnn").modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 32 == 0 for c in convs)
    assert all(c.in_channels % 32 == 0 for c in convs[1:])


@pytest.mark.parametrize(
    "arch", ["resnet20", "vgg16_bn", "mobilenet_v3_small", "resnet18", "lenet5", "digits_cnn"]
)
def test_num_classes_override(arch):
    spec = MODELS[arch]
    x = torch.randn(2, *SMALL_INPUT.get(arch, spec.input_shape))
    with torch.no_grad():
        assert get_model(arch, num_classes=7).eval()(x).shape == (2, 7)


@pytest.mark.parametrize("arch", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large"])
def test_width_mult_shrinks_mobilenets(arch):
    model = get_model(arch, width_mult=0.5).eval()
    assert n_params(model) < PARAMS[arch]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_unknown_arch_lists_known_names():
    with pytest.raises(ValueError, match="arch: unknown model 'resnet19'.*resnet20.*digits_cnn"):
        get_model("resnet19")


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2.5}, "num_classes"),
    ({"shortcut": "C"}, "shortcut"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model("resnet20", **kwargs)


@pytest.mark.parametrize(
    "kwargs,match", [({"width_mult": 0}, "width_mult"), ({"dropout": 1.0}, "dropout")]
)
def test_bad_mobilenet_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model("mobilenet_v2", **kwargs)
