#include <cassert>

#include "block/qcow2.h"

namespace mpq::block::qcow2 {

TableCache::Entry* TableCache::find(uint64_t off) {
    auto it = map_.find(off);
    if (it == map_.end()) return nullptr;
    if (it->second != lru_.begin()) lru_.splice(lru_.begin(), lru_, it->second);
    return &*it->second;
}

void TableCache::erase_lru() {
    assert(!lru_.empty());
    map_.erase(lru_.back().offset);
    lru_.pop_back();
}

TableCache::Entry& TableCache::insert(uint64_t off, std::vector<uint8_t> data, bool dirty) {
    assert(!full() && !map_.count(off) && data.size() == table_size_);
    lru_.push_front(Entry{off, std::move(data), dirty});
    map_[off] = lru_.begin();
    return lru_.front();
}

void TableCache::drop(uint64_t off) {
    auto it = map_.find(off);
    if (it == map_.end()) return;
    lru_.erase(it->second);
    map_.erase(it);
}

bool TableCache::any_dirty() const {
    for (const auto& e : lru_)
        if (e.dirty) return true;
    return false;
}

}  // namespace mpq::block::qcow2
