// Helpers for the block_* and scsi_* unit tests: temporary image files and
// reading back what reached them.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace mpq::testutil {

class TempImage {
public:
    explicit TempImage(uint64_t size, uint8_t fill = 0) {
        char tmpl[] = "/tmp/mpq-block-XXXXXX";
        int fd = mkstemp(tmpl);
        EXPECT_GE(fd, 0);
        path_ = tmpl;
        if (fill) {
            std::vector<uint8_t> b(size, fill);
            EXPECT_EQ(::pwrite(fd, b.data(), b.size(), 0), static_cast<ssize_t>(size));
        } else {
            EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
        }
        ::close(fd);
    }
    ~TempImage() { ::unlink(path_.c_str()); }
    const std::string& path() const { return path_; }

    std::vector<uint8_t> read(uint64_t off, size_t len) const {
        std::vector<uint8_t> b(len, 0xEE);
        int fd = ::open(path_.c_str(), O_RDONLY);
        EXPECT_GE(fd, 0);
        ssize_t n = ::pread(fd, b.data(), len, static_cast<off_t>(off));
        EXPECT_GE(n, 0);
        if (n >= 0) b.resize(static_cast<size_t>(n));
        ::close(fd);
        return b;
    }
    void write(uint64_t off, const std::vector<uint8_t>& b) const {
        int fd = ::open(path_.c_str(), O_WRONLY);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::pwrite(fd, b.data(), b.size(), static_cast<off_t>(off)),
                  static_cast<ssize_t>(b.size()));
        ::close(fd);
    }
    uint64_t size() const {
        struct stat st {};
        EXPECT_EQ(::stat(path_.c_str(), &st), 0);
        return static_cast<uint64_t>(st.st_size);
    }

private:
    std::string path_;
};

inline std::vector<uint8_t> pattern(size_t len, uint32_t seed) {
    std::vector<uint8_t> b(len);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& c : b) {
        x = x * 1103515245u + 12345u;
        c = static_cast<uint8_t>(x >> 16);
    }
    return b;
}

}  // namespace mpq::testutil
