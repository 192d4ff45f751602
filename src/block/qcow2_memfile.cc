#include "block/qcow2_memfile.h"

#include <cerrno>
#include <cstring>

namespace mpq::block::qcow2 {
namespace {

class MemFile final : public BlockDriver {
public:
    explicit MemFile(std::shared_ptr<MemStore> s) : s_(std::move(s)) {}
    std::string format_name() const override { return "memory"; }
    uint64_t length() const override { return s_->data.size(); }
    bool concurrent_safe() const override { return false; }
    Status pread(uint64_t off, std::span<uint8_t> buf) override {
        uint64_t n = off >= s_->data.size() ? 0 : std::min<uint64_t>(buf.size(), s_->data.size() - off);
        if (n) std::memcpy(buf.data(), s_->data.data() + off, n);
        if (n < buf.size()) std::memset(buf.data() + n, 0, buf.size() - n);
        return {};
    }
    Status pwrite(uint64_t off, std::span<const uint8_t> buf) override {
        if (s_->crash_at_write >= 0 && s_->writes == uint64_t(s_->crash_at_write) && !s_->has_crashed) {
            s_->crashed = s_->crash_image(s_->rng);
            s_->has_crashed = true;
        }
        if (s_->kill_at_write >= 0 && s_->writes == uint64_t(s_->kill_at_write) && !s_->has_killed) {
            s_->killed = s_->data;
            s_->has_killed = true;
        }
        if (s_->fail_write_at >= 0 && s_->writes == uint64_t(s_->fail_write_at)) {
            s_->writes++;
            return fail_errno(EIO, "memory file: injected write error");
        }
        s_->writes++;
        if (off > s_->max_size || buf.size() > s_->max_size - off)
            return fail_errno(ENOSPC, "memory file: no space");
        if (off + buf.size() > s_->data.size()) s_->data.resize(off + buf.size(), 0);
        std::memcpy(s_->data.data() + off, buf.data(), buf.size());
        if (s_->track_durability) s_->unflushed.push_back({off, {buf.begin(), buf.end()}});
        return {};
    }
    Status flush() override {
        s_->flushes++;
        if (s_->track_durability) {
            s_->durable = s_->data;
            s_->unflushed.clear();
        }
        return {};
    }
    Status discard(uint64_t, uint64_t) override { return {}; }
    Status write_zeroes(uint64_t off, uint64_t len) override {
        std::vector<uint8_t> z(len, 0);
        return pwrite(off, z);
    }

private:
    std::shared_ptr<MemStore> s_;
};

}  // namespace

std::vector<uint8_t> MemStore::crash_image(std::mt19937_64& rng) const {
    std::vector<uint8_t> img = durable;
    for (const auto& w : unflushed) {
        if (rng() & 1) continue;  // this write never reached the medium
        if (w.off + w.bytes.size() > img.size()) img.resize(w.off + w.bytes.size(), 0);
        std::memcpy(img.data() + w.off, w.bytes.data(), w.bytes.size());
    }
    return img;
}

std::unique_ptr<BlockDriver> make_memory_file(std::shared_ptr<MemStore> store) {
    return std::make_unique<MemFile>(std::move(store));
}

}  // namespace mpq::block::qcow2
