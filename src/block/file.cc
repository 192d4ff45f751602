#include "block/file.h"
#include "block/runtime.h"
#include "util/fdset.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "util/log.h"

namespace mpq::block {

namespace {

// Bounce buffers are bounded so a huge unaligned request never allocates
// its own size.
constexpr uint64_t kBounceWindow = 1 << 20;

struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBuf aligned_alloc_buf(uint32_t align, uint64_t len) {
    void* p = nullptr;
    if (posix_memalign(&p, std::max<uint32_t>(align, sizeof(void*)), len) != 0) return nullptr;
    return AlignedBuf(static_cast<uint8_t*>(p));
}

uint64_t align_down(uint64_t v, uint64_t a) { return v - v % a; }
uint64_t align_up(uint64_t v, uint64_t a) { return align_down(v + a - 1, a); }

bool range_overflows(uint64_t off, uint64_t len) { return off + len < off; }

}  // namespace

Result<std::unique_ptr<BlockDriver>> open_file(const DriveOptions& opts) {
    auto r = FileDriver::open(opts);
    if (!r) return r.take_error();
    return std::unique_ptr<BlockDriver>(std::move(r.value()));
}

Result<std::unique_ptr<FileDriver>> FileDriver::open(const DriveOptions& opts) {
    if (opts.file.empty()) return fail("drive '{}': no file name given", opts.id);
    std::unique_ptr<FileDriver> d(new FileDriver());
    d->path_ = opts.file;
    d->read_only_ = opts.read_only;
    d->cache_ = opts.cache;
    d->direct_ = (opts.cache == CacheMode::None || opts.cache == CacheMode::Directsync)
                     ? DirectIo::Yes
                     : DirectIo::No;

    int flags = O_CLOEXEC | (opts.read_only == ReadOnly::Yes ? O_RDONLY : O_RDWR);
    if (d->direct_ == DirectIo::Yes) flags |= O_DIRECT;
    if (opts.cache == CacheMode::Writethrough || opts.cache == CacheMode::Directsync)
        flags |= O_DSYNC;
    // After start-up (sandbox on) a path may be off limits: say so instead of
    // letting the seccomp filter kill the process; /dev/fdset/N is a dup of
    // an fd a monitor client passed.
    const bool late = runtime_limits().active;
    int fd = -1;
    if (fdset::is_fdset_path(opts.file)) {
        auto r = fdset::open_path(opts.file, flags);
        if (!r) return r.take_error();
        fd = r->release();
    } else {
        MPQ_TRY(check_path_open(opts.file, opts.read_only == ReadOnly::No));
        fd = ::open(opts.file.c_str(), flags);
    }
    if (fd < 0) {
        int e = errno;
        if (e == EINVAL && d->direct_ == DirectIo::Yes)
            return fail_errno(e, "Could not open '{}': the file system does not support "
                                 "O_DIRECT (cache={})", opts.file, cache_mode_name(opts.cache));
        return fail_errno(e, "Could not open '{}': {}", opts.file, std::strerror(e));
    }
    d->fd_.reset(fd);

    struct stat st {};
    if (fstat(fd, &st) != 0) {
        int e = errno;
        return fail_errno(e, "Could not stat '{}': {}", opts.file, std::strerror(e));
    }
    uint64_t size = 0;
    if (S_ISBLK(st.st_mode) && late) {
        // The sandbox allows no ioctl for this: the size is where the end is.
        d->block_device_ = true;
        off_t end = ::lseek(fd, 0, SEEK_END);
        if (end < 0) {
            int e = errno;
            return fail_errno(e, "'{}': cannot get block device size: {}", opts.file, std::strerror(e));
        }
        size = static_cast<uint64_t>(end);
    } else if (S_ISBLK(st.st_mode)) {
        d->block_device_ = true;
        if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
            int e = errno;
            return fail_errno(e, "'{}': cannot get block device size: {}", opts.file,
                              std::strerror(e));
        }
    } else if (S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
    } else {
        return fail_errno(EINVAL, "'{}' is not a regular file or block device", opts.file);
    }
    d->size_.store(size);

    if (d->direct_ == DirectIo::Yes) {
        uint32_t align = 4096;  // always sufficient when nothing better is known
        if (late) {
            // No ioctl or statx under the sandbox: 4096 is always enough.
        } else if (d->block_device_) {
            int lbs = 0;
            if (ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs >= 512 && lbs <= 65536 &&
                (lbs & (lbs - 1)) == 0)
                align = static_cast<uint32_t>(lbs);
        } else {
            struct statx sx {};
            if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
                (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align >= 512 &&
                sx.stx_dio_offset_align <= 65536) {
                align = std::max(sx.stx_dio_offset_align, sx.stx_dio_mem_align);
                if (align & (align - 1)) align = 4096;
            }
        }
        d->align_ = align;
    }
    return d;
}

bool FileDriver::is_aligned(uint64_t off, const void* buf, uint64_t len) const {
    if (align_ <= 1) return true;
    return off % align_ == 0 && len % align_ == 0 &&
           reinterpret_cast<uintptr_t>(buf) % align_ == 0;
}

void FileDriver::note_written(uint64_t end) {
    uint64_t cur = size_.load(std::memory_order_relaxed);
    while (end > cur && !size_.compare_exchange_weak(cur, end)) {
    }
}

Status FileDriver::refuse_write(const char* what) const {
    return fail_errno(EROFS, "'{}' is read-only: {} refused", path_, what);
}

// Short reads mean end of file: the rest reads as zeroes, as for a sparse tail.
Status FileDriver::read_full(uint64_t off, uint8_t* p, uint64_t len) {
    while (len > 0) {
        ssize_t n = ::pread(fd_.get(), p, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return fail_errno(e, "'{}': read of {} bytes at {} failed: {}", path_, len, off,
                              std::strerror(e));
        }
        if (n == 0) {
            std::memset(p, 0, len);
            return {};
        }
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<uint64_t>(n);
    }
    return {};
}

bool FileDriver::read_cached(uint64_t off, std::span<uint8_t> buf) {
    if (!nowait_ok_ || direct() || buf.empty() || range_overflows(off, buf.size())) return false;
    uint8_t* p = buf.data();
    uint64_t len = buf.size();
    while (len > 0) {
        iovec iov{p, len};
        ssize_t n = ::preadv2(fd_.get(), &iov, 1, static_cast<off_t>(off), RWF_NOWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            // EAGAIN: not all cached. EOPNOTSUPP/EINVAL: the kernel or file
            // cannot say, so never ask again. Real errors (EIO) are left to
            // the ordinary read, which reports them.
            if (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) nowait_ok_ = false;
            return false;
        }
        if (n == 0) {
            // RWF_NOWAIT may also stop short at an uncached page; only a
            // read at or past the known end is the end of the file.
            if (off < length()) return false;
            std::memset(p, 0, len);
            return true;
        }
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<uint64_t>(n);
    }
    return true;
}

Status FileDriver::write_full(uint64_t off, const uint8_t* p, uint64_t len) {
    while (len > 0) {
        ssize_t n = ::pwrite(fd_.get(), p, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return fail_errno(e, "'{}': write of {} bytes at {} failed: {}", path_, len, off,
                              std::strerror(e));
        }
        if (n == 0)
            return fail_errno(ENOSPC, "'{}': write at {} made no progress", path_, off);
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<uint64_t>(n);
    }
    return {};
}

Status FileDriver::pread(uint64_t off, std::span<uint8_t> buf) {
    if (range_overflows(off, buf.size())) return fail_errno(EINVAL, "read range overflows");
    if (buf.empty()) return {};
    if (!is_aligned(off, buf.data(), buf.size())) return bounce_read(off, buf);
    return read_full(off, buf.data(), buf.size());
}

// Returns success only once every byte went through pwrite(2): the data is
// then in the page cache (or on the device with O_DIRECT/O_DSYNC), where it
// outlives this process, so a write the guest saw complete survives a kill
// of the device process in every cache mode. io_uring writes keep the same
// rule (uring.cc resubmits short writes before completing).
Status FileDriver::pwrite(uint64_t off, std::span<const uint8_t> buf) {
    if (read_only()) return refuse_write("write");
    if (range_overflows(off, buf.size())) return fail_errno(EINVAL, "write range overflows");
    if (buf.empty()) return {};
    if (!is_aligned(off, buf.data(), buf.size())) return bounce_write(off, buf);
    Status st;
    if (direct()) {
        std::shared_lock lk(rmw_mu_);
        st = write_full(off, buf.data(), buf.size());
    } else {
        st = write_full(off, buf.data(), buf.size());
    }
    if (st) note_written(off + buf.size());
    return st;
}

Status FileDriver::bounce_read(uint64_t off, std::span<uint8_t> buf) {
    const uint64_t a = align_;
    const uint64_t end = off + buf.size();
    uint64_t a0 = align_down(off, a);
    const uint64_t a1 = align_up(end, a);
    AlignedBuf bounce = aligned_alloc_buf(align_, std::min(kBounceWindow, a1 - a0));
    if (!bounce) return fail_errno(ENOMEM, "'{}': no memory for a bounce buffer", path_);
    while (a0 < a1) {
        uint64_t w = std::min(kBounceWindow, a1 - a0);
        MPQ_TRY(read_full(a0, bounce.get(), w));
        uint64_t from = std::max(a0, off), to = std::min(a0 + w, end);
        std::memcpy(buf.data() + (from - off), bounce.get() + (from - a0), to - from);
        a0 += w;
    }
    return {};
}

// Partial blocks at either end are read, patched and written back whole.
Status FileDriver::bounce_write(uint64_t off, std::span<const uint8_t> buf) {
    const uint64_t a = align_;
    const uint64_t end = off + buf.size();
    uint64_t a0 = align_down(off, a);
    const uint64_t a1 = align_up(end, a);
    AlignedBuf bounce = aligned_alloc_buf(align_, std::min(kBounceWindow, a1 - a0));
    if (!bounce) return fail_errno(ENOMEM, "'{}': no memory for a bounce buffer", path_);

    std::unique_lock lk(rmw_mu_);
    struct stat st {};
    uint64_t old_size = length();
    if (!block_device_ && fstat(fd_.get(), &st) == 0) old_size = static_cast<uint64_t>(st.st_size);
    while (a0 < a1) {
        uint64_t w = std::min(kBounceWindow, a1 - a0);
        uint64_t from = std::max(a0, off), to = std::min(a0 + w, end);
        if (from > a0) MPQ_TRY(read_full(a0, bounce.get(), a));
        if (to < a0 + w) MPQ_TRY(read_full(a0 + w - a, bounce.get() + w - a, a));
        std::memcpy(bounce.get() + (from - a0), buf.data() + (from - off), to - from);
        MPQ_TRY(write_full(a0, bounce.get(), w));
        a0 += w;
    }
    // Whole-block writes may have grown the file past what was asked for.
    uint64_t want = std::max(old_size, end);
    if (!block_device_ && a1 > want) {
        if (ftruncate(fd_.get(), static_cast<off_t>(want)) != 0) {
            int e = errno;
            return fail_errno(e, "'{}': truncate after write failed: {}", path_, std::strerror(e));
        }
    }
    note_written(end);
    return {};
}

Status FileDriver::flush() {
    if (cache_ == CacheMode::Unsafe || read_only()) return {};
    while (fdatasync(fd_.get()) != 0) {
        if (errno == EINTR) continue;
        int e = errno;
        return fail_errno(e, "'{}': flush failed: {}", path_, std::strerror(e));
    }
    return {};
}

Status FileDriver::truncate(uint64_t new_len) {
    if (read_only()) return refuse_write("resize");
    if (new_len > static_cast<uint64_t>(INT64_MAX))
        return fail_errno(EFBIG, "'{}': size {} is too large", path_, new_len);
    if (block_device_) {
        if (new_len == length()) return {};
        // A device's size is not ours to change (QEMU: "Cannot grow device files").
        return fail_errno(ENOTSUP, "Cannot {} device files", new_len > length() ? "grow" : "shrink");
    }
    while (::ftruncate(fd_.get(), static_cast<off_t>(new_len)) != 0) {
        if (errno == EINTR) continue;
        int e = errno;
        return fail_errno(e, "'{}': resize to {} bytes failed: {}", path_, new_len, std::strerror(e));
    }
    size_.store(new_len);
    return {};
}

Status FileDriver::discard(uint64_t off, uint64_t len) {
    if (read_only()) return refuse_write("discard");
    if (range_overflows(off, len)) return fail_errno(EINVAL, "discard range overflows");
    if (len == 0) return {};
    uint64_t size = length();
    if (off >= size) return {};
    len = std::min(len, size - off);
    int r;
    do {
        r = fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      static_cast<off_t>(off), static_cast<off_t>(len));
    } while (r != 0 && errno == EINTR);
    if (r == 0) return {};
    int e = errno;
    // Discard is a hint: a file system that cannot punch holes simply keeps the data.
    if (e == EOPNOTSUPP || e == ENOSYS || e == ENOTTY) return {};
    return fail_errno(e, "'{}': discard of {} bytes at {} failed: {}", path_, len, off,
                      std::strerror(e));
}

Status FileDriver::write_zeroes(uint64_t off, uint64_t len) {
    if (read_only()) return refuse_write("write zeroes");
    if (range_overflows(off, len)) return fail_errno(EINVAL, "write zeroes range overflows");
    if (len == 0) return {};
    std::unique_lock lk(rmw_mu_, std::defer_lock);
    if (direct()) lk.lock();
    int r;
    do {
        r = fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE, static_cast<off_t>(off),
                      static_cast<off_t>(len));
    } while (r != 0 && errno == EINTR);
    if (r == 0) {
        note_written(off + len);
        return {};
    }
    int e = errno;
    if (e != EOPNOTSUPP && e != ENOSYS && e != EINVAL && e != ENOTTY && e != ENODEV)
        return fail_errno(e, "'{}': write zeroes of {} bytes at {} failed: {}", path_, len, off,
                          std::strerror(e));
    // A punched hole reads as zeroes, but only inside the file.
    if (off + len <= length()) {
        do {
            r = fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(off), static_cast<off_t>(len));
        } while (r != 0 && errno == EINTR);
        if (r == 0) return {};
    }
    if (lk.owns_lock()) lk.unlock();
    return zero_by_writing(off, len);
}

Status FileDriver::zero_by_writing(uint64_t off, uint64_t len) {
    const uint64_t chunk = std::min<uint64_t>(kBounceWindow, align_up(len, std::max<uint32_t>(align_, 1)));
    AlignedBuf zeroes = aligned_alloc_buf(std::max<uint32_t>(align_, 64), chunk);
    if (!zeroes) return fail_errno(ENOMEM, "'{}': no memory for zeroes", path_);
    std::memset(zeroes.get(), 0, chunk);
    while (len > 0) {
        uint64_t n = std::min(chunk, len);
        MPQ_TRY(pwrite(off, std::span<const uint8_t>(zeroes.get(), n)));
        off += n;
        len -= n;
    }
    return {};
}

}  // namespace mpq::block
