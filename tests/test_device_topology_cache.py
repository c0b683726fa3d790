"""The GPU topology cache (python_bindings/device_topology_cache.h): a layer's
index tensors are checked once, into private copies the kernels read; a
call hits only for the same storages at the same version counters. Its
logic runs here on CPU tensors through a probe binding whose check refuses
negative entries (no GPU on CI)."""
import gc

import pytest
import torch

C = pytest.importorskip("sparsekernels._ext").C
pytestmark = pytest.mark.skipif(C is None, reason="extension not built")


def probe(tensors, key=(1, 2)):
    return C._device_topology_cache_probe(tensors, list(key))


def _index(*values):
    return torch.tensor(values, dtype=torch.int32)


def test_checked_once_then_read_from_the_checked_copies():
    a, b = _index(0, 2, 3), _index(1, 0, 2)
    read, ran = probe([a, b])
    assert ran and [torch.equal(r, t) for r, t in zip(read, (a, b))] == [True, True]
    assert all(r.data_ptr() != t.data_ptr() for r, t in zip(read, (a, b)))  # copies
    again, ran = probe([a, b])
    assert not ran and all(r is s or r.data_ptr() == s.data_ptr() for r, s in zip(again, read))
    _, ran = probe([a, b], key=(1, 3))  # another geometry: checked again
    assert ran


def test_an_in_place_edit_is_checked_before_a_kernel_reads_it():
    a = _index(0, 2, 3)
    probe([a])
    a[1] = -5  # bumps the version counter
    with pytest.raises(ValueError, match="probe: negative entry"):
        probe([a])
    a[1] = 1
    read, ran = probe([a])
    assert ran and read[0].tolist() == [0, 1, 3]


def test_a_write_past_the_version_counter_never_reaches_the_kernels():
    a = _index(0, 2, 3)
    probe([a])
    a.data[1] = -5  # .data has its own version counter: a hit, on the checked copy
    read, ran = probe([a])
    assert not ran and read[0].tolist() == [0, 2, 3]


def test_a_freed_storage_reused_by_another_tensor_misses():
    a = _index(0, 2, 3)
    probe([a])
    ptr = a.data_ptr()
    del a
    gc.collect()
    b = _index(7, 8, 9)  # may land on the same allocation, version 0
    read, ran = probe([b])
    assert ran and read[0].tolist() == [7, 8, 9], ptr


def test_a_view_at_another_offset_misses():
    base = _index(0, 1, 2, 3)
    probe([base[:3]])
    read, ran = probe([base[1:]])
    assert ran and read[0].tolist() == [1, 2, 3]


def test_inference_tensors_are_checked_every_call():
    with torch.inference_mode():
        a = _index(0, 2, 3)
    assert probe([a])[1] and probe([a])[1]
