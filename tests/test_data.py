"""Data sets: the bundled digits split, and CIFAR / MNIST / image-folder loaders
fed tiny fakes written in the real on-disk formats."""
import gzip
import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from sparsekernels.data import DATASETS, DataInfo, get_datasets
from sparsekernels.data.cifar import VARIANTS
from sparsekernels.data.files import DataFileError
from sparsekernels.data.transforms import RandomResizedCrop


def first_items(dataset, n=4):
    return torch.stack([dataset[i][0] for i in range(n)])


# ---- digits ----------------------------------------------------------------
def test_digits_split_sizes_values_and_stratification():
    train, test, info = get_datasets("digits")
    assert info == DataInfo(10, (1, 8, 8), "digits")
    assert (len(train), len(test)) == (1437, 360)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    for split in (train, test):
        assert 0 <= float(split.images.min()) and float(split.images.max()) <= 1
    # Stratified: each class's test share is within one sample of 20%.
    totals = Counter(train.labels.tolist()) + Counter(test.labels.tolist())
    test_counts = Counter(test.labels.tolist())
    assert all(abs(test_counts[c] - 0.2 * totals[c]) <= 1 for c in totals)


def test_digits_split_is_deterministic_per_seed():
    a, _, _ = get_datasets("digits", seed=1)
    b, _, _ = get_datasets("digits", seed=1)
    c, _, _ = get_datasets("digits", seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


# ---- CIFAR -----------------------------------------------------------------
def write_cifar(root, variant, n_per_batch=6):
    """Fake CIFAR batches with the official layout: a dict of bytes keys,
    uint8 data [N, 3072] (R, G, B planes) and a list of labels."""
    spec = VARIANTS[variant]
    folder, files = spec.folder, spec.train_files + spec.test_files
    os.makedirs(root / folder)
    rng = np.random.default_rng(0)
    for f in files:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, spec.num_classes, n_per_batch).tolist()
        with open(root / folder / f, "wb") as fh:
            batch = {b"batch_label": f.encode(), b"data": data, spec.label_key: labels}
            pickle.dump(batch, fh, protocol=2)
    return root / folder


@pytest.mark.parametrize("variant,classes,n_train", [("cifar10", 10, 30), ("cifar100", 100, 6)])
def test_cifar_loads_from_folder_or_parent(tmp_path, variant, classes, n_train):
    folder = write_cifar(tmp_path, variant)
    for data_path in (str(tmp_path), str(folder)):
        train, test, info = get_datasets(variant, data_path)
        assert info == DataInfo(classes, (3, 32, 32), variant)
        assert (len(train), len(test)) == (n_train, 6)
    with open(folder / VARIANTS[variant].test_files[0], "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    x, y = test[2]
    assert x.shape == (3, 32, 32) and y == raw[VARIANTS[variant].label_key][2]
    # Rows hold R, G, B planes: undoing the normalisation recovers them.
    mean = torch.tensor(VARIANTS[variant].mean).view(3, 1, 1)
    std = torch.tensor(VARIANTS[variant].std).view(3, 1, 1)
    pixels = (x * std + mean) * 255
    expected = torch.from_numpy(raw[b"data"][2].reshape(3, 32, 32).astype(np.float32))
    torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)


def test_cifar_augmentation_keeps_shape_and_is_seeded(tmp_path):
    write_cifar(tmp_path, "cifar10")
    train, test, _ = get_datasets("cifar10", str(tmp_path))
    torch.manual_seed(5)
    a = first_items(train, 12)
    torch.manual_seed(5)
    b = first_items(train, 12)
    assert a.shape == (12, 3, 32, 32) and torch.equal(a, b)
    plain, _, _ = get_datasets("cifar10", str(tmp_path), augment=False)
    assert not torch.equal(a, first_items(plain, 12))  # 12 crops+flips are never all identity
    torch.testing.assert_close(plain[0][0], test.transform(plain.images[0]))  # the test transform


def test_cifar_rejects_pickles_that_run_code(tmp_path):
    folder = write_cifar(tmp_path, "cifar10")
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": os.system, b"labels": []}, fh)
    with pytest.raises(DataFileError, match=r"test_batch: not a CIFAR batch: refers to "
                                            r"(posix|os|nt)\.system"):
        get_datasets("cifar10", str(tmp_path))


# ---- MNIST -----------------------------------------------------------------
def idx_bytes(array, magic=None):
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root, gz, n_train=5, n_test=3):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        if gz:
            with gzip.open(root / (name + ".gz"), "wb") as fh:
                fh.write(idx_bytes(array))
        else:
            (root / name).write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gz(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz)
    train, test, info = get_datasets("mnist", str(tmp_path))
    assert info == DataInfo(10, (1, 28, 28), "mnist")
    assert (len(train), len(test)) == (5, 3)
    x, y = test[1]
    assert x.shape == (1, 28, 28) and y == arrays["t10k-labels-idx1-ubyte"][1]
    pixels = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][1]).float()
    expected = (pixels / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[0], expected)


def test_mnist_bad_magic_is_a_clear_error(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3), magic=0x00000803))
    expected = r"t10k-labels-idx1-ubyte: bad idx magic number 0x00000803, expected 0x00000801"
    with pytest.raises(ValueError, match=expected):
        get_datasets("mnist", str(tmp_path))


def test_mnist_truncated_data_is_a_clear_error(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"header gives shape \(5, 28, 28\)"):
        get_datasets("mnist", str(tmp_path))


# ---- image folders ---------------------------------------------------------
CLASSES = ["ant", "bee", "cat"]


def write_image_tree(root, per_class=2):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for i, name in enumerate(reversed(CLASSES)):  # written out of order on purpose
            os.makedirs(root / split / name)
            for j in range(per_class):
                pixels = rng.integers(0, 256, (20 + 4 * j, 24 + 2 * i, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"img{j}.png")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("name", ["imagenet", "imagefolder"])
def test_image_folder_tree(tmp_path, name):
    write_image_tree(tmp_path)
    train, val, info = get_datasets(name, str(tmp_path), image_size=16)
    assert info == DataInfo(3, (3, 16, 16), name)
    assert train.classes == CLASSES and (len(train), len(val)) == (6, 6)
    assert [label for _, label in val.samples] == [0, 0, 1, 1, 2, 2]
    assert all(CLASSES[label] in path for path, label in train.samples)
    x, y = train[0]
    assert x.shape == (3, 16, 16) and y == 0
    torch.manual_seed(9)
    a = first_items(train, 6)
    torch.manual_seed(9)
    assert torch.equal(a, first_items(train, 6))
    assert first_items(val, 6).shape == (6, 3, 16, 16)


def test_random_resized_crop_stays_inside_the_image():
    crop = RandomResizedCrop(8)
    torch.manual_seed(0)
    for width, height in [(30, 20), (5, 40), (64, 64)]:
        for _ in range(50):
            left, top, right, bottom = crop.crop_box(width, height)
            assert 0 <= left < right <= width and 0 <= top < bottom <= height


def test_val_class_missing_from_train_is_an_error(tmp_path):
    write_image_tree(tmp_path)
    os.makedirs(tmp_path / "val" / "dog")
    with pytest.raises(ValueError, match=r"class folders \['dog'\] are not among the train"):
        get_datasets("imagenet", str(tmp_path), image_size=16)


# ---- errors ----------------------------------------------------------------
@pytest.mark.parametrize("name,match", [
    ("cifar10", r"data_batch_1.*test_batch.*cifar-10-batches-py.*cifar-10-python.tar.gz"),
    ("cifar100", r"train, test.*cifar-100-python.*cifar-100-python.tar.gz"),
    ("mnist", r"train-images-idx3-ubyte.*\.gz.*MNIST.*raw.*https://"),
    ("imagenet", r"train.*one subfolder of images per class.*image-net.org"),
])
def test_missing_files_say_what_was_expected(tmp_path, name, match):
    with pytest.raises(FileNotFoundError, match=match):
        get_datasets(name, str(tmp_path))


@pytest.mark.parametrize("args,kwargs,match", [
    (("svhn",), {}, r"name: unknown data set 'svhn'; known: digits, cifar10"),
    (("cifar10",), {}, "data_path: cifar10 reads files from disk"),
    (("digits",), {"seed": -1}, "seed"),
    (("digits",), {"augment": "yes"}, "augment"),
    (("digits",), {"image_size": 16}, "image_size: only imagenet and imagefolder"),
    (("imagenet", "/nonexistent"), {"image_size": 0}, "image_size: expected a positive int"),
])
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_datasets(*args, **kwargs)


def test_registry_names():
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "mnist", "imagenet", "imagefolder"}
