// A most-recently-used-first list bounded by its number of entries and by
// their total cost (bytes): the caches of checked topologies and of weight
// plans. Not synchronised: its owner holds a mutex around every call.
#pragma once
#include <cstddef>
#include <list>
#include <utility>

namespace sparsekernels {

template <typename Entry>
class BoundedLru {
 public:
  BoundedLru(size_t max_entries, size_t max_cost)
      : max_entries_(max_entries), max_cost_(max_cost) {}

  // The first entry `match` accepts, made the most recent; null if none.
  template <typename Match>
  Entry* find(Match&& match) {
    for (auto it = items_.begin(); it != items_.end(); ++it)
      if (match(it->first)) {
        items_.splice(items_.begin(), items_, it);
        return &items_.front().first;
      }
    return nullptr;
  }

  // `e` as the most recent entry; the least recent ones dropped past either
  // bound (the new one always stays).
  void insert(Entry e, size_t cost) {
    items_.emplace_front(std::move(e), cost);
    cost_ += cost;
    while (items_.size() > 1 && (items_.size() > max_entries_ || cost_ > max_cost_)) {
      cost_ -= items_.back().second;
      items_.pop_back();
    }
  }

 private:
  size_t max_entries_, max_cost_, cost_ = 0;
  std::list<std::pair<Entry, size_t>> items_;  // (entry, cost), most recent first
};

}  // namespace sparsekernels
