"""Malformed and hostile data files: each must give a DataFileError (a ValueError)
naming the file, decided before anything is allocated for what the file only
claims to hold, and never hang on a FIFO or a symlink loop."""
import gzip
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data import idx_bytes, write_cifar, write_image_tree, write_mnist

from sparsekernels.data import DataFileError, get_datasets
from sparsekernels.data.cifar_pickle import MalformedPickle, load_batch_pickle
from sparsekernels.data.files import open_regular_file
from sparsekernels.data.mnist import read_idx

_RECONSTRUCT = np.zeros(1, np.uint8).__reduce__()[0]  # numpy's own, whatever its module
_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]


class LyingArray:
    """Pickles as a numpy array whose state says whatever it is given."""

    def __init__(self, shape, raw, dtype="u1", via_frombuffer=False):
        self.shape, self.raw, self.via_frombuffer = shape, raw, via_frombuffer
        self.dtype = np.dtype(dtype) if isinstance(dtype, str) else dtype  # None stays None

    def __reduce__(self):
        if self.via_frombuffer:
            return _FROMBUFFER, (self.raw, self.dtype, self.shape, "C")
        state = (1, self.shape, self.dtype, False, self.raw)
        return _RECONSTRUCT, (np.ndarray, (0,), b"b"), state


def batch_pickle(data, labels, protocol=2, label_key=b"labels"):
    return pickle.dumps({b"batch_label": b"x", b"data": data, label_key: labels}, protocol)


def cifar_with_test_batch(tmp_path, raw):
    """A CIFAR-10 folder whose test_batch holds ``raw``; the path to load."""
    folder = write_cifar(tmp_path, "cifar10", n_per_batch=2)
    (folder / "test_batch").write_bytes(raw)
    return str(tmp_path)


def images(n, dtype=np.uint8):
    return np.random.default_rng(3).integers(0, 256, (n, 3072)).astype(dtype)


def py2_batch(data, labels):
    """A batch as Python 2 pickled the official files: byte strings, GLOBAL
    numpy.core names, b'u1', protocol-1 INT for the order flag."""
    labels_ops = b"".join(b"K" + bytes([label]) for label in labels)
    n = len(data)
    return (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02"
            b"cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04("
            b"K\x01M" + n.to_bytes(2, "little") + b"M\x00\x0c\x86cnumpy\ndtype\nq\x05U\x02u1"
            b"K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            b"I00\nT" + len(data.tobytes()).to_bytes(4, "little") + data.tobytes() + b"tb"
            b"U\x06labelsq\x07]q\x08(" + labels_ops + b"eu.")


def repeated_encode(text_chars, repeats):
    """Protocol 2 opcodes that encode one memoised text ``repeats`` times."""
    text = ("\xff" * text_chars).encode("utf-8")
    call = b"h\x00h\x01h\x02\x86R"  # encode(memo[1], memo[2])
    return (b"\x80\x02}(U\x04datac_codecs\nencode\nq\x00X" + len(text).to_bytes(4, "little")
            + text + b"q\x01X\x06\x00\x00\x00latin1q\x02](" + call * repeats + b"eu.")


# ---- CIFAR: valid encodings still load -------------------------------------
@pytest.mark.parametrize("protocol", [1, 2, 3, 4, 5])
def test_cifar_batches_of_every_protocol_load(tmp_path, protocol):
    data = images(2)
    path = cifar_with_test_batch(tmp_path, batch_pickle(data, [3, 9], protocol))
    _, test, _ = get_datasets("cifar10", path, augment=False)
    assert test.labels.tolist() == [3, 9]
    assert np.array_equal(test.images.reshape(2, -1).numpy(), data)


def test_cifar_python2_batch_loads(tmp_path):
    data = images(3)
    path = cifar_with_test_batch(tmp_path, py2_batch(data, [0, 5, 9]))
    _, test, _ = get_datasets("cifar10", path, augment=False)
    assert test.labels.tolist() == [0, 5, 9]
    assert np.array_equal(test.images.reshape(3, -1).numpy(), data)


# ---- CIFAR: arrays that lie --------------------------------------------------
@pytest.mark.parametrize("array,match", [
    (LyingArray((1_000_000, 3072), b"\0" * 3072),
     r"array shape \(1000000, 3072\) needs 3072000000 bytes but the file holds 3072"),
    (LyingArray((2**30, 2**30), b"\0"), r"array shape .* needs 1152921504606846976 bytes"),
    (LyingArray((2, 3072), b"\0" * 3072), r"array shape \(2, 3072\) needs 6144 bytes"),
    (LyingArray((300_000, 3072), b"\0", via_frombuffer=True),
     r"array shape \(300000, 3072\) needs 921600000 bytes"),
    (LyingArray((2, 3072), b"\0" * 8 * 6144, dtype="f8"), r"dtype 'f8', expected uint8"),
    (LyingArray((2, 3072), "not bytes"), r"array data is a str, expected bytes"),
    (LyingArray((2, -3072), b"\0"), r"array shape \(2, -3072\) is not a tuple of at most 64"),
    (LyingArray((2, 1.5), b"\0"), r"array shape \(2, 1.5\) is not a tuple of at most 64"),
    (LyingArray([2, 3072], b"\0"), r"array shape a list is not a tuple"),
    (LyingArray((1,) * 65, b"\0"), r"array shape a tuple of 65 is not a tuple of at most 64"),
    (LyingArray((2, 3072), b"\0" * 6144, dtype="V8"), r"dtype 'V8', expected uint8"),
    (LyingArray((2, 3072), b"\0" * 6144, dtype=None), r"dtype None, expected uint8"),
])
def test_cifar_array_state_must_match_its_bytes(tmp_path, array, match):
    path = cifar_with_test_batch(tmp_path, batch_pickle(array, [1, 2]))
    with pytest.raises(DataFileError, match=r"test_batch: b'data': " + match):
        get_datasets("cifar10", path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int8, np.uint16])
def test_cifar_non_uint8_data_is_refused_not_cast(tmp_path, dtype):
    path = cifar_with_test_batch(tmp_path, batch_pickle(images(2, dtype), [1, 2]))
    expected = r"test_batch: b'data': dtype '[a-z]\d', expected uint8"
    with pytest.raises(DataFileError, match=expected):
        get_datasets("cifar10", path)


@pytest.mark.parametrize("labels,match", [
    ([1, 300], r"b'labels'\[1\] is 300, expected an int in \[0, 10\)"),
    ([-1, 2], r"b'labels'\[0\] is -1"),
    ([1, 10], r"b'labels'\[1\] is 10"),
    ([True, 2], r"b'labels'\[0\] is True"),
    ([1.0, 2], r"b'labels'\[0\] is 1.0"),
    ([b"1", 2], r"b'labels'\[0\] is b'1'"),
    ([[1], 2], r"b'labels'\[0\] is a list"),
    ((1, 2), r"b'labels' is a tuple, expected a list of ints"),
    ([1], r"2 images in b'data' but 1 labels in b'labels'"),
])
def test_cifar_bad_labels_name_the_file_and_field(tmp_path, labels, match):
    path = cifar_with_test_batch(tmp_path, batch_pickle(images(2), labels))
    with pytest.raises(DataFileError, match=r"test_batch: " + match):
        get_datasets("cifar10", path)


def test_cifar_deeply_nested_label_is_described_not_recursed_into(tmp_path):
    raw = batch_pickle(np.zeros((1, 3072), np.uint8), [7])
    assert raw.count(b"K\x07a") == 1  # the label 7, appended to the labels list
    depth = 100_000  # far beyond the recursion limit a repr would need
    nested = b"]" * (depth + 1) + b"a" * (depth + 1)  # [[[...]]] appended instead
    path = cifar_with_test_batch(tmp_path, raw.replace(b"K\x07a", nested))
    expected = r"test_batch: b'labels'\[0\] is a list, expected an int"
    with pytest.raises(DataFileError, match=expected):
        get_datasets("cifar10", path)


def test_cifar_numpy_scalar_labels_are_refused(tmp_path):
    raw = batch_pickle(images(2), [np.int64(1), np.int64(2)])
    path = cifar_with_test_batch(tmp_path, raw)
    with pytest.raises(DataFileError, match=r"refers to numpy.*scalar, which a CIFAR batch never"):
        get_datasets("cifar10", path)


@pytest.mark.parametrize("data,match", [
    (np.zeros((2, 3073), np.uint8), r"b'data' has shape \(2, 3073\), expected \[N, 3072\]"),
    (np.zeros(6144, np.uint8), r"b'data' has shape \(6144,\)"),
    (np.zeros((0, 3072), np.uint8), r"b'data' has shape \(0, 3072\)"),
    ([[0] * 3072] * 2, r"b'data' is a list, expected a numpy uint8 array"),
])
def test_cifar_data_must_be_n_by_3072(tmp_path, data, match):
    labels = [1] * len(data)
    path = cifar_with_test_batch(tmp_path, batch_pickle(data, labels, protocol=4))
    with pytest.raises(DataFileError, match=r"test_batch: " + match):
        get_datasets("cifar10", path)


# ---- CIFAR: pickles that are not batches -------------------------------------
GOOD = batch_pickle(images(2), [1, 2])


@pytest.mark.parametrize("raw,match", [
    (b"", r"truncated"),
    (GOOD[:len(GOOD) // 2], r"truncated"),
    (GOOD + b"junk", r"4 bytes of junk follow the pickle"),
    (pickle.dumps([1, 2], 2), r"a list, expected a dict with b'data' and b'labels'"),
    (pickle.dumps({b"data": 1}, 2), r"no b'labels'"),
    (batch_pickle(images(2), [1, 2], label_key=b"fine_labels"), r"no b'labels'"),
    (b"\x80\x02Nr\xff\xff\xff\x7f.", r"a NoneType, expected a dict"),  # memo index 2**31-1
    (b"\x80\x02}h\x05.", r"memo entry 5 is used before it is set"),
    (b"\x80\x02}(K\x01]u.", r"no b'data', expected a dict with b'data' and b'labels'"),
    (b"\x80\x02}(]K\x01u.", r"a dict key is a list"),
    (b"\x80\x02}(K\x01u.", r"an odd number of dict items"),
    (b"\x80\x02u.", r"no MARK"),
    (b"\x80\x02a.", r"pops an empty stack"),
    (b"\x80\x02K\x01K\x02a.", r"expected a list on the stack"),
    (b"\x80\x06}.", r"protocol above 5"),
    (b"\x80\x02cbuiltins\neval\n.", r"refers to builtins.eval"),
    (b"\x80\x02cnumpy\nndarray\n)R.", r"calls numpy.ndarray, which a CIFAR batch never does"),
    (b"\x80\x02K\x01)R.", r"calls a int"),
    (b"\x80\x02cnumpy\ndtype\n](K\x01eR.", r"calls numpy.dtype|not a tuple"),
    (b"\x80\x02cnumpy\ndtype\n(]tR.", r"dtype is called with a list, expected a type code"),
    (b"\x80\x02}K\x01b.", r"sets the state of a non-array"),
    (b"\x80\x02c" + b"a" * 100 + b"\n", r"no short text line"),
    (b"\x80\x02I1e99\n.", r"INT '1e99' is not a small decimal"),
    (b"\x80\x02I--5\n.", r"INT '--5' is not a small decimal"),
    (b"\x80\x02I-5\n.", r"a int, expected a dict"),
    (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", r"invalid UTF-8"),
    (b"\x80\x02X\xff\xff\xff\xff.", r"truncated: 4294967295 bytes needed"),
    (b"\x80\x04\x8e" + b"\xff" * 8 + b".", r"truncated: 18446744073709551615 bytes needed"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00hex\x86R.",
     r"_codecs.encode is called with other than \(text, 'latin1'\)"),
    (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.",
     r"encodes text that is not latin-1"),
    (repeated_encode(1000, 10), r"encodes more text than the file holds"),
    (b"\x80\x02Q.", r"opcode 0x51 at byte 2, which a CIFAR batch never uses"),
    (b"\x80\x02]]]\x93.", r"refers to a global not named by text"),
    (b"\x80\x04\x8c\x05posix\x8c\x06system\x93.", r"refers to posix.system"),
])
def test_cifar_malformed_pickles_are_clear_errors(tmp_path, raw, match):
    path = cifar_with_test_batch(tmp_path, raw)
    with pytest.raises(DataFileError, match=r"test_batch: not a CIFAR batch: .*(" + match + ")"):
        get_datasets("cifar10", path)


def test_cifar_array_state_set_twice_is_refused():
    raw = pickle.dumps(np.zeros((1, 3072), np.uint8), 2)
    assert raw[-4:-3] == b"q" and raw[-2:] == b"b."  # ... BINPUT <state>, BUILD, STOP
    raw = raw[:-1] + b"h" + raw[-3:-2] + b"b."  # BINGET <state>, BUILD again
    with pytest.raises(MalformedPickle, match=r"an array's state is set twice"):
        load_batch_pickle(raw, 10_000)


def test_cifar_opcode_budget_bounds_the_work():
    raw = pickle.dumps(list(range(100)), 2)
    assert load_batch_pickle(raw, 1000) == list(range(100))
    with pytest.raises(MalformedPickle, match=r"more than 50 opcodes"):
        load_batch_pickle(raw, 50)


def test_cifar_oversized_file_is_refused_before_reading(tmp_path):
    path = cifar_with_test_batch(tmp_path, b"")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        fh.truncate(1 << 40)  # sparse: takes no disk
    with pytest.raises(DataFileError, match=r"test_batch: 1099511627776 bytes, more than the"):
        get_datasets("cifar10", path)


# ---- MNIST -------------------------------------------------------------------
def write_idx(path, raw, gz):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(raw)
        return str(path) + ".gz"
    path.write_bytes(raw)
    return str(path)


def idx_header(dims, type_code=0x08):
    return (bytes([0, 0, type_code, len(dims)])
            + b"".join(d.to_bytes(4, "big") for d in dims))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("raw,match", [
    (b"", r"bad idx magic number a file shorter than 4 bytes"),
    (idx_header((5, 28, 28), type_code=0x0D),
     r"bad idx magic number 0x00000d03, expected 0x00000803"),
    (b"\x01\x00\x08\x03", r"bad idx magic number 0x01000803"),
    (idx_header((5, 28, 28))[:10], r"truncated idx header \(10 bytes\)"),
    (idx_header((2**32 - 1,) * 3), r"header gives shape \(4294967295, 4294967295, 4294967295\)"),
    (idx_header((65536, 65536, 1)), r"header gives shape \(65536, 65536, 1\) \(4294967296 bytes\), "
                                    r"expected sizes of at least 1 and at most 2147483648"),
    (idx_header((5, 0, 28)), r"header gives shape \(5, 0, 28\) \(0 bytes\)"),
    (idx_header((60000, 28, 28)) + b"\0" * 100,
     r"header gives shape \(60000, 28, 28\) \(47040000 bytes\) but only 100 bytes of data follow"),
    (idx_header((1, 2, 2)) + b"\0" * 5,
     r"header gives shape \(1, 2, 2\) \(4 bytes\) but more data follows"),
])
def test_mnist_malformed_images_are_clear_errors(tmp_path, gz, raw, match):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", raw, gz)
    with pytest.raises(DataFileError, match=os.path.basename(path) + ": " + match):
        read_idx(path, 3)


@pytest.mark.parametrize("tamper,match", [
    (lambda raw: raw[:len(raw) // 2], r"unreadable data \(Compressed file ended"),
    (lambda raw: raw + b"junk", r"unreadable data \(Not a gzipped file"),
    (lambda raw: b"not gzip at all", r"unreadable data \(Not a gzipped file"),
    (lambda raw: raw[:-8] + b"\0" * 8, r"unreadable data \(CRC check failed"),
])
def test_mnist_corrupt_gzip_is_a_clear_error(tmp_path, tamper, match):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(tamper(gzip.compress(idx_bytes(np.arange(10)))))
    with pytest.raises(DataFileError, match=r"x-idx1-ubyte.gz: " + match):
        read_idx(str(path), 1)


def test_mnist_label_out_of_range_and_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 10, 2])))
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte: label 10 outside \[0, 10\)"):
        get_datasets("mnist", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 2])))
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte: 3 images but .* 2 labels"):
        get_datasets("mnist", str(tmp_path))


def test_mnist_lying_gz_header_allocates_only_what_is_there(tmp_path):
    # Claims the maximum; holds a few bytes. Memory is checked in the rlimit test.
    path = write_idx(tmp_path / "x-idx3-ubyte", idx_header((2048, 1024, 1024)) + b"\0" * 9, True)
    with pytest.raises(DataFileError, match=r"\(2147483648 bytes\) but only 9 bytes"):
        read_idx(path, 3)


# ---- FIFOs and other non-files ------------------------------------------------
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


@needs_fifo
def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")  # nobody ever writes: opening must not wait
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte: expected a regular file, "
                                            r"found a FIFO"):
        read_idx(str(tmp_path / "train-images-idx3-ubyte"), 3)
    with pytest.raises(DataFileError, match=r"expected a regular file, found a folder"):
        open_regular_file(str(tmp_path))


@needs_fifo
def test_dataset_fifos_are_not_taken_for_files(tmp_path):
    write_cifar(tmp_path, "cifar10", n_per_batch=2)
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    os.mkfifo(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(FileNotFoundError, match=r"test_batch"):
        get_datasets("cifar10", str(tmp_path))


# ---- image folders -----------------------------------------------------------
needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")


@needs_symlinks
def test_image_folder_symlink_loops_add_nothing(tmp_path):
    write_image_tree(tmp_path)
    ant = tmp_path / "train" / "ant"
    os.symlink(ant, ant / "self")  # a loop onto its own class
    os.makedirs(ant / "deeper")
    os.symlink(tmp_path / "train", ant / "deeper" / "split")  # up to the split: every class
    os.symlink(tmp_path / "train" / "bee", ant / "bees")  # into another class
    os.symlink(ant / "deeper", ant / "deeper" / "again")
    train, _, _ = get_datasets("imagefolder", str(tmp_path), image_size=8)
    assert sorted(os.path.relpath(p, tmp_path) for p, _ in train.samples) == sorted(
        f"train/{name}/img{j}.png" for name in ("ant", "bee", "cat") for j in range(2))
    assert [label for _, label in train.samples] == [0, 0, 1, 1, 2, 2]


@needs_symlinks
def test_image_folder_symlinked_subfolder_is_followed_once(tmp_path):
    write_image_tree(tmp_path)
    extra = tmp_path / "more_ants"
    os.makedirs(extra)
    Image.new("RGB", (9, 9)).save(extra / "x.png")
    os.symlink(extra, tmp_path / "train" / "ant" / "link1")
    os.symlink(extra, tmp_path / "train" / "ant" / "link2")
    train, _, _ = get_datasets("imagefolder", str(tmp_path), image_size=8)
    linked = [p for p, _ in train.samples if p.endswith("x.png")]
    assert linked == [str(tmp_path / "train" / "ant" / "link1" / "x.png")]


@needs_symlinks
def test_two_class_folders_linked_to_one_are_an_error(tmp_path):
    write_image_tree(tmp_path)
    os.symlink(tmp_path / "train" / "ant", tmp_path / "train" / "ant2")
    with pytest.raises(DataFileError, match=r"train: two class folders are links to one folder"):
        get_datasets("imagefolder", str(tmp_path), image_size=8)


@needs_fifo
def test_image_folder_skips_non_files_with_a_warning(tmp_path, caplog):
    write_image_tree(tmp_path)
    os.mkfifo(tmp_path / "train" / "bee" / "fifo.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "train" / "bee" / "broken.png")
    os.symlink("loop.png", tmp_path / "train" / "bee" / "loop.png")  # stat fails with ELOOP
    os.symlink("loop_dir", tmp_path / "train" / "cat" / "loop_dir")
    with caplog.at_level(logging.WARNING, logger="sparsekernels.data.image_folder"):
        train, _, _ = get_datasets("imagefolder", str(tmp_path), image_size=8)
    assert len(train) == 6
    assert "skipped 3 image-named entries that are not regular files" in caplog.text
    assert "fifo.png" in caplog.text


@needs_fifo
def test_image_that_becomes_a_fifo_or_is_corrupt_is_a_clear_error(tmp_path):
    write_image_tree(tmp_path)
    train, _, _ = get_datasets("imagefolder", str(tmp_path), image_size=8)
    first, second = train.samples[0][0], train.samples[1][0]
    os.remove(first)
    os.mkfifo(first)  # swapped after the scan: reading must still not wait
    with pytest.raises(DataFileError, match=r"img0.png: expected a regular file, found a FIFO"):
        train[0]
    with open(second, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFileError, match=r"img1.png: not a readable image \(unknown format\)"):
        train[1]
    with open(second, "wb") as fh:  # a real PNG header, then nothing
        fh.write(Path(train.samples[2][0]).read_bytes()[:40])
    with pytest.raises(DataFileError, match=r"img1.png: not a readable image \(.+\)"):
        train[1]


def test_data_file_error_survives_pickling_and_worker_reraise(tmp_path):
    error = DataFileError("/data/x.png", "not a readable image")
    assert isinstance(error, ValueError) and str(error) == "/data/x.png: not a readable image"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert str(DataFileError(str(error))) == str(error)  # how a DataLoader worker re-raises it


# ---- memory: the checks come before any big allocation -------------------------
_CHILD = textwrap.dedent("""
    import resource, sys
    from sparsekernels.data import DataFileError
    from sparsekernels.data.cifar import _read_batch
    from sparsekernels.data.mnist import read_idx
    # What the process maps now plus 256 MiB: each file below claims far more.
    mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (256 << 20), hard))
    for path in sys.argv[1:]:
        try:
            read_idx(path, 3) if "idx" in path else _read_batch(path, b"labels", 10)
            print("loaded", path)
        except DataFileError:
            print("refused")
        except MemoryError:
            print("MemoryError", path)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_tiny_hostile_files_are_refused_within_bounded_memory(tmp_path):
    files = {
        "memo_table": b"\x80\x02}r\xff\xff\xff\x7f.",  # pickle.Unpickler sizes its memo: 16 GiB
        "lying_shape": batch_pickle(LyingArray((300_000, 3072), b"\0" * 3072), [1]),  # 0.9 GB
        "lying_frombuffer": batch_pickle(LyingArray((10**6, 3072), b"", via_frombuffer=True), []),
        "encode_again": repeated_encode(100_000, 20_000),  # 2 GB of encoded text
    }
    paths = []
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
        paths.append(str(tmp_path / name))
    paths.append(write_idx(tmp_path / "claims-2GiB-idx3", idx_header((2048, 1024, 1024)), True))
    result = subprocess.run([sys.executable, "-c", _CHILD, *paths], capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused"] * len(paths), result.stdout
