// In-memory raw driver: see mem.h.
#include "block/mem.h"

#include <cerrno>
#include <cstring>

namespace mpq::block {

namespace {

class MemDriver final : public BlockDriver {
public:
    MemDriver(std::shared_ptr<MemImage> image, ReadOnly ro) : img_(std::move(image)), ro_(ro) {}

    std::string format_name() const override { return "raw"; }
    uint64_t length() const override { return img_->bytes.size(); }

    Status pread(uint64_t off, std::span<uint8_t> buf) override {
        if (overflows(off, buf.size())) return fail_errno(EINVAL, "read range overflows");
        const uint64_t size = img_->bytes.size();
        uint64_t have = off >= size ? 0 : std::min<uint64_t>(buf.size(), size - off);
        if (have) std::memcpy(buf.data(), img_->bytes.data() + off, have);
        if (have < buf.size()) std::memset(buf.data() + have, 0, buf.size() - have);
        return {};
    }

    Status pwrite(uint64_t off, std::span<const uint8_t> buf) override {
        if (ro_ == ReadOnly::Yes) return refuse("write");
        if (overflows(off, buf.size())) return fail_errno(EINVAL, "write range overflows");
        if (buf.empty()) return {};
        MPQ_TRY(grow_to(off + buf.size()));
        std::memcpy(img_->bytes.data() + off, buf.data(), buf.size());
        return {};
    }

    Status flush() override {
        ++img_->flushes;
        return {};
    }

    Status discard(uint64_t off, uint64_t len) override {
        if (ro_ == ReadOnly::Yes) return refuse("discard");
        if (overflows(off, len)) return fail_errno(EINVAL, "discard range overflows");
        const uint64_t size = img_->bytes.size();
        if (len == 0 || off >= size) return {};
        len = std::min(len, size - off);
        std::memset(img_->bytes.data() + off, 0, len);
        return {};
    }

    Status write_zeroes(uint64_t off, uint64_t len) override {
        if (ro_ == ReadOnly::Yes) return refuse("write zeroes");
        if (overflows(off, len)) return fail_errno(EINVAL, "write zeroes range overflows");
        if (len == 0) return {};
        MPQ_TRY(grow_to(off + len));
        std::memset(img_->bytes.data() + off, 0, len);
        return {};
    }

    // The backend serialises calls: the vector may be reallocated by growth.
    bool concurrent_safe() const override { return false; }

    Status truncate(uint64_t new_len) override {
        if (ro_ == ReadOnly::Yes) return refuse("resize");
        if (new_len > img_->max_size)
            return fail_errno(ENOSPC, "in-memory image: {} bytes is over its {}-byte limit",
                              new_len, img_->max_size);
        img_->bytes.resize(new_len);
        return {};
    }

private:
    static bool overflows(uint64_t off, uint64_t len) { return off + len < off; }
    static Status refuse(const char* what) {
        return fail_errno(EROFS, "in-memory image is read-only: {} refused", what);
    }
    Status grow_to(uint64_t end) {
        if (end <= img_->bytes.size()) return {};
        if (end > img_->max_size)
            return fail_errno(ENOSPC, "in-memory image: a write up to {} is over its {}-byte limit",
                              end, img_->max_size);
        img_->bytes.resize(end);
        return {};
    }

    std::shared_ptr<MemImage> img_;
    ReadOnly ro_;
};

}  // namespace

std::unique_ptr<BlockDriver> make_mem_driver(std::shared_ptr<MemImage> image, ReadOnly ro) {
    return std::make_unique<MemDriver>(std::move(image), ro);
}

}  // namespace mpq::block
