// Validated topologies on a GPU, so that a layer's every call neither copies
// its index tensors to the host (a stream sync per call: the GPU idles while
// the CPU checks, and no call can be captured in a CUDA graph) nor lets an
// unchecked index reach a kernel.
//
// The first call with a topology checks it in full on the host, from a
// private device copy, and the kernels then read that copy, never the
// caller's tensors: nothing outside this cache can write to it, so what a
// kernel reads is exactly what was checked, whatever happens to the caller's
// tensors afterwards. Later calls hit when every tensor is the same storage
// (a weak reference: a freed and reused allocation misses), offset, size and
// version counter (in-place edits through torch bump it) under the same
// geometry. A write that bypasses the version counter (`.data`, DLPack) is
// not seen: the kernels keep reading the checked copy, i.e. the topology as
// it was; they never read an unchecked index. Inference tensors (no version
// counter) are checked on every call, in place.
//
// The CPU path keeps its own checks: they read the tensors in place, no sync.
#pragma once
#include <torch/extension.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "cpu/common/bounded_lru.h"

namespace sparsekernels {
namespace glue {

class DeviceTopologyCache {
 public:
  // The checked private copies of `tensors` (CUDA, int32) under `key` (the
  // kind and the geometry its check depends on): from the cache, or copied
  // and passed to `check(copies)`, which throws on a bad topology (nothing
  // is cached then). Tensors without a version counter are checked as
  // they are and returned.
  using Check = std::function<void(const std::vector<at::Tensor>&)>;
  std::vector<at::Tensor> checked(const std::vector<at::Tensor>& tensors,
                                  const std::vector<int64_t>& key, const Check& check) {
    const bool versioned = trackable(tensors);
    if (versioned) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto match = [&](const Entry& e) { return matches(e, tensors, key); };
      if (const Entry* hit = entries_.find(match)) return hit->copies;
    }
    if (!versioned) {  // checked on every call anyway: a copy would buy nothing
      check(tensors);
      return tensors;
    }
    std::vector<at::Tensor> copies;
    copies.reserve(tensors.size());
    for (const auto& t : tensors) copies.push_back(t.clone(at::MemoryFormat::Contiguous));
    check(copies);
    Entry e{key, {}, {}, {}, {}, copies};
    for (const auto& t : tensors) {
      e.storages.push_back(t.storage().getWeakStorageImpl());
      e.offsets.push_back(t.storage_offset());
      e.sizes.push_back(t.numel());
      e.versions.push_back(version(t));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.insert(std::move(e), 1);
    return copies;
  }

 private:
  // A few layers' worth per network; each entry holds its copies (index
  // tensors only, small next to the weights) until it is dropped.
  static constexpr size_t kCapacity = 256;

  struct Entry {
    std::vector<int64_t> key;
    std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> storages;
    std::vector<int64_t> offsets, sizes;
    std::vector<uint32_t> versions;
    std::vector<at::Tensor> copies;
  };

  static bool trackable(const std::vector<at::Tensor>& tensors) {
    for (const auto& t : tensors)
      if (t.is_inference() || !t.has_storage()) return false;
    return true;
  }

  static uint32_t version(const at::Tensor& t) {
    return t.unsafeGetTensorImpl()->version_counter().current_version();
  }

  static bool matches(const Entry& e, const std::vector<at::Tensor>& tensors,
                      const std::vector<int64_t>& key) {
    if (e.key != key || e.storages.size() != tensors.size()) return false;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      auto alive = e.storages[i].lock();  // null once the storage was freed
      if (!alive || alive.get() != t.storage().unsafeGetStorageImpl() ||
          e.offsets[i] != t.storage_offset() || e.sizes[i] != t.numel() ||
          e.versions[i] != version(t))
        return false;
    }
    return true;
  }

  std::mutex mutex_;  // calls may come from several Python/autograd threads
  BoundedLru<Entry> entries_{kCapacity, kCapacity};  // each entry costs 1
};

inline DeviceTopologyCache& device_topologies() {
  static DeviceTopologyCache cache;
  return cache;
}

// The first entry of a cache key: which kind's check it passed.
enum TopologyKind : int64_t { kBlock1xNTopology = 1, kStripeTopology, kPatternTopology };

// The index tensors the kernels read, checked by `check` (which reads them on
// the host and throws on a bad topology): checked private copies on a GPU
// (see above), else the caller's own (the CPU reads them in place, no copy). `key`
// starts with the kind, then the geometry the check depends on.
inline std::vector<at::Tensor> checked_index_tensors(
    const at::Device& device, const std::vector<at::Tensor>& tensors,
    const std::vector<int64_t>& key, const DeviceTopologyCache::Check& check) {
  if (!device.is_cuda()) {
    check(tensors);
    return tensors;
  }
  return device_topologies().checked(tensors, key, check);
}

}  // namespace glue
}  // namespace sparsekernels
