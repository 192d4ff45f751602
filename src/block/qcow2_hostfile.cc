// A plain host-file protocol driver for qcow2 backing files and mpq-io.
// Unlike a guest-facing raw disk it lets the qcow2 layer grow the file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "block/qcow2.h"
#include "util/unique_fd.h"

namespace mpq::block::qcow2 {
namespace {

class HostFile final : public BlockDriver {
public:
    HostFile(UniqueFd fd, uint64_t len, std::string path) : fd_(std::move(fd)), len_(len), path_(std::move(path)) {}
    std::string format_name() const override { return "file"; }
    uint64_t length() const override { return len_; }
    bool concurrent_safe() const override { return true; }

    Status pread(uint64_t off, std::span<uint8_t> buf) override {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done, off_t(off + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail_errno(errno, "'{}': read failed: {}", path_, std::strerror(errno));
            if (n == 0) {  // past EOF reads as zeros
                std::memset(buf.data() + done, 0, buf.size() - done);
                break;
            }
            done += size_t(n);
        }
        return {};
    }
    Status pwrite(uint64_t off, std::span<const uint8_t> buf) override {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pwrite(fd_.get(), buf.data() + done, buf.size() - done, off_t(off + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail_errno(errno, "'{}': write failed: {}", path_, std::strerror(errno));
            done += size_t(n);
        }
        len_ = std::max<uint64_t>(len_, off + buf.size());
        return {};
    }
    Status flush() override {
        if (::fdatasync(fd_.get()) < 0) return fail_errno(errno, "'{}': flush failed: {}", path_, std::strerror(errno));
        return {};
    }
    Status discard(uint64_t off, uint64_t len) override {
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(off), off_t(len)) < 0 &&
            errno != EOPNOTSUPP)
            return fail_errno(errno, "'{}': discard failed: {}", path_, std::strerror(errno));
        return {};
    }
    Status write_zeroes(uint64_t off, uint64_t len) override {
        if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE, off_t(off), off_t(len)) == 0) {
            len_ = std::max<uint64_t>(len_, off + len);
            return {};
        }
        std::vector<uint8_t> z(std::min<uint64_t>(len, 1 << 20), 0);
        for (uint64_t pos = 0; pos < len; pos += z.size())
            MPQ_TRY(pwrite(off + pos, {z.data(), std::min<uint64_t>(z.size(), len - pos)}));
        return {};
    }

private:
    UniqueFd fd_;
    uint64_t len_;
    std::string path_;
};

}  // namespace

Result<std::unique_ptr<BlockDriver>> open_host_file(const std::string& path, ReadOnly ro) {
    UniqueFd fd(::open(path.c_str(), (ro == ReadOnly::Yes ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd) return fail_errno(errno, "'{}': {}", path, std::strerror(errno));
    struct stat st;
    if (::fstat(fd.get(), &st) < 0) return fail_errno(errno, "'{}': {}", path, std::strerror(errno));
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return fail_errno(EINVAL, "'{}': not a regular file or block device", path);
    uint64_t len = uint64_t(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        off_t end = ::lseek(fd.get(), 0, SEEK_END);
        if (end < 0) return fail_errno(errno, "'{}': {}", path, std::strerror(errno));
        len = uint64_t(end);
    }
    return std::unique_ptr<BlockDriver>(std::make_unique<HostFile>(std::move(fd), len, path));
}

}  // namespace mpq::block::qcow2
