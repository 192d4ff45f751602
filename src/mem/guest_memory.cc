#include "mem/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>

namespace mpq {
namespace {

bool add_overflows(uint64_t a, uint64_t b) { return a + b < a; }

// The VMM owns the files behind guest RAM. If it shrinks one after we mapped
// it, touching the lost range raises SIGBUS, which would kill the device
// process. The handler below puts a private zero page over the faulting page
// of a guest-RAM mapping (so the access completes) and counts the event; the
// accessors turn that into an error. Faults anywhere else keep their default
// action.
constexpr int kMaxGuarded = 64;
struct GuardedRange {
    std::atomic<uintptr_t> start{0};
    std::atomic<uintptr_t> end{0};
};
GuardedRange g_guarded[kMaxGuarded];
std::atomic<uint64_t> g_ram_faults{0};
uintptr_t g_page_size = 4096;
struct sigaction g_prev_sigbus;
std::once_flag g_sigbus_once;

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
    uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
    for (auto& g : g_guarded) {
        uintptr_t s = g.start.load(std::memory_order_acquire);
        if (s == 0 || a < s || a >= g.end.load(std::memory_order_acquire)) continue;
        void* page = reinterpret_cast<void*>(a & ~(g_page_size - 1));
        if (::mmap(page, g_page_size, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0) != MAP_FAILED) {
            g_ram_faults.fetch_add(1, std::memory_order_relaxed);
            return;  // the access is retried on the zero page
        }
    }
    // Not guest RAM: whatever was there before handles the retried fault.
    if (g_prev_sigbus.sa_flags & SA_SIGINFO) {
        if (g_prev_sigbus.sa_sigaction) return g_prev_sigbus.sa_sigaction(sig, si, ctx);
    }
    ::sigaction(SIGBUS, &g_prev_sigbus, nullptr);
}

void install_sigbus_guard() {
    std::call_once(g_sigbus_once, [] {
        g_page_size = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
        struct sigaction sa {};
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGBUS, &sa, &g_prev_sigbus);
    });
}

void guard_range(void* base, size_t len) {
    auto s = reinterpret_cast<uintptr_t>(base);
    for (auto& g : g_guarded) {
        uintptr_t expected = 0;
        if (g.start.load() != 0) continue;
        g.end.store(s + len, std::memory_order_release);
        if (g.start.compare_exchange_strong(expected, s, std::memory_order_acq_rel)) return;
    }
    // Table full: the range is simply unguarded (more than 64 mappings).
}

void unguard_range(void* base) {
    auto s = reinterpret_cast<uintptr_t>(base);
    for (auto& g : g_guarded) {
        uintptr_t expected = s;
        if (g.start.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
    }
}

// The handler runs on this thread in the middle of a memcpy: keep the
// compiler from moving the copy across the counter reads.
uint64_t fault_count() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    uint64_t v = g_ram_faults.load(std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return v;
}

// On a PVM guest the first touch of each page through a new mapping costs an
// exception plus a shadow page-table update (~15 us per 4 KiB written, ~12 us
// read even with fault-around): a 1 MiB DMA into guest buffers this process
// never touched took ~3.9 ms. Two cheaper ways, measured on this host:
// - pread/pwrite of the file: the kernel copies through its own mapping, no
//   page of ours is mapped (~0.15-0.3 ms per MiB, ~2 us per 4 KiB);
// - MADV_POPULATE_* then memcpy: one syscall maps the range (~2.2 ms per
//   MiB), after which copies cost nothing extra (0.2 us per 4 KiB; a 1 MiB
//   copy 0.1 ms against 0.34 ms through the file).
// So a granule is first accessed through the file. With the populate thread
// running, its second access (the guest reuses the buffer) has the thread
// populate it while the device carries on through the file; without it, or
// while the thread's queue is full, the device populates it itself on the
// kRent-th access (the pwrite costs then add up to about one populate: ski
// rental). Either way it is then copied through the mapping for good.
// Populate is off for good once the kernel (< 5.14: EINVAL) or a seccomp
// policy (EPERM) says no, so a refusing system pays one failed call.
std::atomic<bool> g_populate{true};
std::atomic<bool> g_file_io{true};

// Heat of a granule: 0 .. kRent-1 accesses through the file so far, or one
// of these.
constexpr uint8_t kQueued = 0xfe;  // handed to the populate thread, not done yet
constexpr uint8_t kHot = 0xff;     // accessed through the mapping from now on

// Pre-faulting is a hint only: whatever madvise answers, a copy behaves the
// same (a range it could not populate simply faults page by page, and a page
// the VMM truncated away still ends in the SIGBUS guard; madvise itself
// reports that as EFAULT, no signal). Populating a whole granule around the
// target only maps pages: a hole in the memfd gets a zeroed page of the
// file, which is what the guest would read there, so guest-visible content
// never changes.
void populate_range(void* base, size_t len, size_t start, size_t stop, int advice) {
    if (!g_populate.load(std::memory_order_relaxed) || start >= stop || stop > len) return;
    if (::madvise(static_cast<uint8_t*>(base) + start, stop - start, advice) != 0) {
        // ENOMEM/EFAULT (memory pressure, a file the VMM shrank): the
        // granules are marked hot all the same so nobody retries on every
        // access; the copy faults them in as it would have anyway.
        int e = errno;
        if (e == EINVAL || e == EPERM || e == ENOSYS) g_populate.store(false, std::memory_order_relaxed);
    }
}

}  // namespace

struct GuestMemory::Area {
    void* base;
    size_t len;
    size_t granules;
    // One entry per kPopulateGranule of [base, base + len). Written by the
    // event-loop thread (all DMA runs there) and, for kQueued granules only,
    // by the populate thread, which marks them kHot.
    std::unique_ptr<std::atomic<uint8_t>[]> heat;

    Area(void* b, size_t l)
        : base(b), len(l), granules((l + kPopulateGranule - 1) / kPopulateGranule),
          heat(std::make_unique<std::atomic<uint8_t>[]>(granules)) {}
    ~Area() {
        unguard_range(base);
        ::munmap(base, len);
    }
    Area(const Area&) = delete;
    Area& operator=(const Area&) = delete;
    uint8_t get(uint64_t g) const { return heat[g].load(std::memory_order_relaxed); }
    void set(uint64_t g, uint8_t v) { heat[g].store(v, std::memory_order_relaxed); }
};

namespace {

// One thread per process that pre-faults granules handed to it, in order.
// Its queue is bounded: an offer it cannot take is refused, and the granule
// stays with the inline rule. Never destroyed (the process may exit while it
// waits), so nothing it uses is torn down under it.
class Populator {
public:
    struct Job {
        std::shared_ptr<GuestMemory::Area> area;
        uint64_t first, end;  // granules
        int advice;
    };
    static constexpr size_t kMaxJobs = 64;

    bool start() {
        try {
            thread_ = std::thread([this] { run(); });
        } catch (const std::system_error&) {
            return false;
        }
        ::pthread_setname_np(thread_.native_handle(), "mpq-populate");
        thread_.detach();
        return true;
    }
    bool offer(Job j) {
        {
            std::lock_guard lk(mu_);
            if (jobs_.size() >= kMaxJobs) return false;
            jobs_.push_back(std::move(j));
        }
        cv_.notify_one();
        return true;
    }

private:
    void run() {
        for (;;) {
            Job j;
            {
                std::unique_lock lk(mu_);
                cv_.wait(lk, [this] { return !jobs_.empty(); });
                j = std::move(jobs_.front());
                jobs_.pop_front();
            }
            GuestMemory::Area& a = *j.area;
            size_t start = static_cast<size_t>(j.first * GuestMemory::kPopulateGranule);
            size_t stop = static_cast<size_t>(std::min<uint64_t>(j.end * GuestMemory::kPopulateGranule, a.len));
            populate_range(a.base, a.len, start, stop, j.advice);
            for (uint64_t g = j.first; g < j.end; g++) a.set(g, kHot);
            // Dropping the job may unmap a table replaced meanwhile.
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Job> jobs_;
    std::thread thread_;
};

std::atomic<Populator*> g_populator{nullptr};

}  // namespace

bool GuestMemory::start_background_populate() {
    static std::mutex mu;
    std::lock_guard lk(mu);
    if (g_populator.load()) return true;
    auto* p = new Populator;
    if (!p->start()) {
        delete p;
        return false;
    }
    g_populator.store(p, std::memory_order_release);
    return true;
}

void GuestMemory::set_populate(Populate p) { g_populate.store(p == Populate::On, std::memory_order_relaxed); }

GuestMemory::Populate GuestMemory::populate() {
    return g_populate.load(std::memory_order_relaxed) ? Populate::On : Populate::Off;
}

void GuestMemory::set_file_io(FileIo f) { g_file_io.store(f == FileIo::On, std::memory_order_relaxed); }

uint64_t GuestMemory::populated_granules() const {
    uint64_t n = 0;
    for (const auto& m : maps_)
        if (m.area)
            for (size_t g = 0; g < m.area->granules; g++) n += m.area->get(g) == kHot;
    return n;
}

void GuestMemory::populate_run(Mapping& m, uint64_t first, uint64_t end, Access a) {
    Area& ar = *m.area;
    for (uint64_t g = first; g < end; g++) ar.set(g, kHot);
    populate_range(ar.base, ar.len, static_cast<size_t>(first * kPopulateGranule),
                   static_cast<size_t>(std::min<uint64_t>(end * kPopulateGranule, ar.len)),
                   a == Access::Write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

// Hands granules [first, end) to the populate thread; false when there is
// none, populate is off, or its queue is full (the granules then count
// `count` accesses). They are marked before the offer: the thread may be
// done with them before it returns.
bool GuestMemory::offer_background(Mapping& m, uint64_t first, uint64_t end, Access a, uint8_t count) {
    Populator* p = g_populator.load(std::memory_order_acquire);
    if (!p || !g_populate.load(std::memory_order_relaxed)) return false;
    for (uint64_t g = first; g < end; g++) m.area->set(g, kQueued);
    if (p->offer({m.area, first, end, a == Access::Write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ})) return true;
    for (uint64_t g = first; g < end; g++) m.area->set(g, count);
    return false;
}

// `off` + `len` lie inside the mapping (the accessor checked the guest
// address); the check below only keeps a bug from indexing past `heat`.
void GuestMemory::prefault(Mapping& m, size_t off, size_t len, Access a) {
    if (!m.area || len == 0 || len > m.area->len || off > m.area->len - len) return;
    const uint64_t first = off / kPopulateGranule;
    const uint64_t last = (off + len - 1) / kPopulateGranule;
    if (last >= m.area->granules) return;
    // One call per run of granules not yet hot (a 1 MiB copy is one madvise).
    uint64_t g = first;
    while (g <= last) {
        if (m.area->get(g) == kHot) {
            g++;
            continue;
        }
        uint64_t end = g;
        while (end <= last && m.area->get(end) != kHot) end++;
        populate_run(m, g, end, a);
        g = end;
    }
}

GuestMemory::Route GuestMemory::route(Mapping& m, size_t off, size_t len, Access a) {
    if (!m.area || len == 0 || len > m.area->len || off > m.area->len - len) return Route::Mapping;
    Area& ar = *m.area;
    const uint64_t first = off / kPopulateGranule;
    const uint64_t last = (off + len - 1) / kPopulateGranule;
    if (last >= ar.granules) return Route::Mapping;
    bool cold = false;
    for (uint64_t g = first; g <= last && !cold; g++) cold = ar.get(g) != kHot;
    if (!cold) return Route::Mapping;
    if (!m.file || !g_file_io.load(std::memory_order_relaxed)) {
        prefault(m, off, len, a);
        return Route::Mapping;
    }
    // Rent: count this access against each granule still paid for through
    // the file; runs of those that reach the threshold go to the populate
    // thread, or are bought here at kRent.
    const bool background = g_populator.load(std::memory_order_relaxed) != nullptr;
    const uint8_t buy_at = background ? kBackgroundRent : kRent;
    bool all_hot = true;
    uint64_t g = first;
    while (g <= last) {
        uint8_t h = ar.get(g);
        if (h == kHot || h == kQueued) {
            all_hot = all_hot && h == kHot;
            g++;
            continue;
        }
        uint8_t n = static_cast<uint8_t>(h + 1);
        ar.set(g, n);
        if (n < buy_at) {
            all_hot = false;
            g++;
            continue;
        }
        uint64_t end = g + 1;
        for (; end <= last; end++) {
            uint8_t e = ar.get(end);
            if (e == kHot || e == kQueued || e + 1 < buy_at) break;
            ar.set(end, static_cast<uint8_t>(e + 1));
        }
        if (background && offer_background(m, g, end, a, n)) {
            all_hot = false;
        } else if (n >= kRent) {
            populate_run(m, g, end, a);
        } else {
            all_hot = false;
        }
        g = end;
    }
    return all_hot ? Route::Mapping : Route::File;
}

// Moves what it can through the file and returns how many bytes that was;
// the caller copies the rest through the mapping, so a short or failed
// transfer changes nothing but speed (and a page the VMM cut off still ends
// in the SIGBUS guard and its error).
size_t GuestMemory::file_io(Mapping& m, size_t off, uint8_t* buf, size_t len, Access a) {
    uint64_t foff = m.file_base + off;
    if (a == Access::Write && m.may_shrink) {
        // pwrite past the end would grow the VMM's file instead of failing
        // like a store through the mapping; a VMM that seals its file
        // (F_SEAL_SHRINK, stock's default) saves this check. A truncate
        // racing it can at worst regrow the file up to the size the VMM
        // shared with us, never beyond.
        struct stat st;
        if (::fstat(m.file.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) < foff + len) return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = a == Access::Write
                        ? ::pwrite(m.file.get(), buf + done, len - done, static_cast<off_t>(foff + done))
                        : ::pread(m.file.get(), buf + done, len - done, static_cast<off_t>(foff + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            // The file refuses (hugetlbfs has no write(2), a seal, ...):
            // this mapping uses the populate path from now on.
            m.file.reset();
            break;
        }
        if (r == 0) break;  // end of file: the VMM shrank it
        done += static_cast<size_t>(r);
    }
    if (done) file_accesses_++;
    return done;
}

void GuestMemory::copy_in(Mapping& m, uint64_t gpa, uint8_t* out, size_t n) {
    if (!m.area) {
        std::memcpy(out, m.host + (gpa - m.gpa), n);
        return;
    }
    const size_t off = static_cast<size_t>(m.host - static_cast<uint8_t*>(m.area->base)) + (gpa - m.gpa);
    size_t done = 0;
    if (route(m, off, n, Access::Read) == Route::File) done = file_io(m, off, out, n, Access::Read);
    if (done < n) std::memcpy(out + done, m.host + (gpa - m.gpa) + done, n - done);
}

void GuestMemory::copy_out(Mapping& m, uint64_t gpa, const uint8_t* in, size_t n) {
    if (!m.area) {
        std::memcpy(m.host + (gpa - m.gpa), in, n);
        return;
    }
    const size_t off = static_cast<size_t>(m.host - static_cast<uint8_t*>(m.area->base)) + (gpa - m.gpa);
    size_t done = 0;
    // pwrite does not write to `in`; file_io shares one signature for both.
    if (route(m, off, n, Access::Write) == Route::File)
        done = file_io(m, off, const_cast<uint8_t*>(in), n, Access::Write);
    if (done < n) std::memcpy(m.host + (gpa - m.gpa) + done, in + done, n - done);
}

uint64_t GuestMemory::lost_page_faults() { return g_ram_faults.load(std::memory_order_relaxed); }

GuestMemory::~GuestMemory() { clear(); }

// Our own descriptor of a region's file for pread/pwrite (the SYNC_SYSMEM
// frame closes its fds). Only a plain read-write descriptor qualifies: with
// O_APPEND, Linux's pwrite ignores the offset. Without one, the region uses
// the populate path alone.
void GuestMemory::open_for_file_io(Mapping& m, int fd) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) != O_RDWR || (fl & O_APPEND)) return;
    m.file.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!m.file) return;
    int seals = ::fcntl(m.file.get(), F_GET_SEALS);
    m.may_shrink = seals < 0 || !(seals & F_SEAL_SHRINK);
}

void GuestMemory::clear() {
    // Each area is unmapped by its last owner: here, or the populate thread
    // once it is done with a job on it.
    maps_.clear();
    file_accesses_ = 0;
}

Status GuestMemory::set_regions(const std::vector<RamRegion>& regions) {
    static const long page = ::sysconf(_SC_PAGESIZE);
    std::vector<Mapping> next;
    next.reserve(regions.size());
    for (size_t i = 0; i < regions.size(); i++) {
        const RamRegion& r = regions[i];
        if (r.size == 0) return clear(), fail("RAM region {}: size 0", i);
        if (add_overflows(r.gpa, r.size - 1) || r.gpa + (r.size - 1) == UINT64_MAX)
            return clear(), fail("RAM region {}: gpa {:#x} + size {:#x} overflows", i, r.gpa, r.size);
        if (r.offset < 0 || add_overflows(static_cast<uint64_t>(r.offset), r.size))
            return clear(), fail("RAM region {}: bad offset {:#x}", i, r.offset);
        struct stat st;
        if (::fstat(r.fd, &st) != 0) return clear(), fail_errno(errno, "RAM region {}: bad fd", i);
        // Only files (memfd, shared files) can be mapped safely; the whole
        // range must exist, or touching it would raise SIGBUS.
        if (!S_ISREG(st.st_mode)) return clear(), fail("RAM region {}: fd is not a memory file", i);
        uint64_t end = static_cast<uint64_t>(r.offset) + r.size;
        if (static_cast<uint64_t>(st.st_size) < end)
            return clear(), fail("RAM region {}: offset {:#x} + size {:#x} beyond the file size {:#x}",
                                 i, r.offset, r.size, static_cast<uint64_t>(st.st_size));
        Mapping m;
        m.gpa = r.gpa;
        m.size = r.size;
        m.dev = static_cast<uint64_t>(st.st_dev);
        m.ino = static_cast<uint64_t>(st.st_ino);
        m.offset = r.offset;
        next.push_back(std::move(m));
    }
    std::sort(next.begin(), next.end(), [](const Mapping& a, const Mapping& b) { return a.gpa < b.gpa; });
    for (size_t i = 1; i < next.size(); i++)
        if (next[i].gpa < next[i - 1].gpa + next[i - 1].size)
            return clear(), fail("RAM regions at {:#x} and {:#x} overlap", next[i - 1].gpa, next[i].gpa);

    // Stock QEMU resends the same table on every topology change.
    bool same = next.size() == maps_.size();
    for (size_t i = 0; same && i < next.size(); i++) {
        const Mapping& a = next[i];
        const Mapping& b = maps_[i];
        same = b.area && a.gpa == b.gpa && a.size == b.size && a.dev == b.dev && a.ino == b.ino &&
               a.offset == b.offset;
    }
    if (same) return {};

    clear();
    install_sigbus_guard();
    // `next` is sorted, `regions` is not: find each region's fd again.
    for (auto& m : next) {
        int fd = -1;
        for (const auto& r : regions)
            if (r.gpa == m.gpa && r.size == m.size && r.offset == m.offset) fd = r.fd;
        uint64_t aligned = static_cast<uint64_t>(m.offset) & ~static_cast<uint64_t>(page - 1);
        uint64_t lead = static_cast<uint64_t>(m.offset) - aligned;
        size_t len = static_cast<size_t>(m.size + lead);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(aligned));
        if (p == MAP_FAILED) {
            int e = errno;
            clear();
            return fail_errno(e, "cannot map RAM at gpa {:#x} size {:#x}: {}", m.gpa, m.size, std::strerror(e));
        }
        guard_range(p, len);
        // A new mapping has no pages yet, whatever the previous one had.
        m.area = std::make_shared<Area>(p, len);
        m.host = static_cast<uint8_t*>(p) + lead;
        m.file_base = aligned;
        open_for_file_io(m, fd);
        maps_.push_back(std::move(m));
    }
    return {};
}

Status GuestMemory::set_host_region(uint64_t gpa, uint8_t* host, uint64_t size) {
    if (size == 0 || !host) return fail("host RAM region: empty");
    if (add_overflows(gpa, size - 1) || gpa + (size - 1) == UINT64_MAX)
        return fail("host RAM region: gpa {:#x} + size {:#x} overflows", gpa, size);
    for (const auto& m : maps_)
        if (gpa < m.gpa + m.size && m.gpa < gpa + size)
            return fail("host RAM region at {:#x} overlaps the one at {:#x}", gpa, m.gpa);
    Mapping m;
    m.gpa = gpa;
    m.size = size;
    m.host = host;
    auto pos = std::lower_bound(maps_.begin(), maps_.end(), gpa,
                                [](const Mapping& a, uint64_t g) { return a.gpa < g; });
    maps_.insert(pos, std::move(m));
    return {};
}

Status GuestMemory::check_faults(uint64_t before, uint64_t gpa, size_t len) {
    if (fault_count() == before) return {};
    return fail("DMA at {:#x} len {:#x}: guest RAM behind it is gone (the VMM shrank its memory file)",
                gpa, len);
}

GuestMemory::Mapping* GuestMemory::find(uint64_t gpa, uint64_t len) {
    // Last region starting at or below gpa.
    auto it = std::upper_bound(maps_.begin(), maps_.end(), gpa,
                               [](uint64_t g, const Mapping& a) { return g < a.gpa; });
    if (it == maps_.begin()) return nullptr;
    --it;
    uint64_t off = gpa - it->gpa;
    if (off >= it->size || len > it->size - off) return nullptr;
    return &*it;
}

std::span<uint8_t> GuestMemory::map(uint64_t gpa, uint64_t len) {
    if (len == 0) return {};
    Mapping* m = find(gpa, len);
    if (!m) return {};
    // The caller may write through the span: populate for writing.
    if (m->area)
        prefault(*m, static_cast<size_t>(m->host - static_cast<uint8_t*>(m->area->base)) + (gpa - m->gpa),
                 static_cast<size_t>(len), Access::Write);
    return {m->host + (gpa - m->gpa), static_cast<size_t>(len)};
}

// Accesses may cross from one region into an adjacent one; a gap fails the
// whole access before anything is copied.
Status GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) {
    if (out.empty()) return {};
    if (add_overflows(gpa, out.size() - 1) || gpa + (out.size() - 1) == UINT64_MAX)
        return fail("DMA read at {:#x} len {:#x}: address overflow", gpa, out.size());
    uint64_t faults = fault_count();
    if (Mapping* m = find(gpa, out.size())) {
        copy_in(*m, gpa, out.data(), out.size());
        return check_faults(faults, gpa, out.size());
    }
    uint64_t a = gpa;
    size_t done = 0;
    while (done < out.size()) {
        const Mapping* m = find(a, 1);
        if (!m) return fail("DMA read at {:#x} len {:#x}: {:#x} is not guest RAM", gpa, out.size(), a);
        done += std::min<uint64_t>(out.size() - done, m->gpa + m->size - a);
        a = gpa + done;
    }
    a = gpa;
    done = 0;
    while (done < out.size()) {
        Mapping* m = find(a, 1);
        size_t n = static_cast<size_t>(std::min<uint64_t>(out.size() - done, m->gpa + m->size - a));
        copy_in(*m, a, out.data() + done, n);
        done += n;
        a += n;
    }
    return check_faults(faults, gpa, out.size());
}

Status GuestMemory::write(uint64_t gpa, std::span<const uint8_t> in) {
    if (in.empty()) return {};
    if (add_overflows(gpa, in.size() - 1) || gpa + (in.size() - 1) == UINT64_MAX)
        return fail("DMA write at {:#x} len {:#x}: address overflow", gpa, in.size());
    uint64_t faults = fault_count();
    if (Mapping* m = find(gpa, in.size())) {
        copy_out(*m, gpa, in.data(), in.size());
        return check_faults(faults, gpa, in.size());
    }
    uint64_t a = gpa;
    size_t done = 0;
    while (done < in.size()) {
        const Mapping* m = find(a, 1);
        if (!m) return fail("DMA write at {:#x} len {:#x}: {:#x} is not guest RAM", gpa, in.size(), a);
        done += std::min<uint64_t>(in.size() - done, m->gpa + m->size - a);
        a = gpa + done;
    }
    a = gpa;
    done = 0;
    while (done < in.size()) {
        Mapping* m = find(a, 1);
        size_t n = static_cast<size_t>(std::min<uint64_t>(in.size() - done, m->gpa + m->size - a));
        copy_out(*m, a, in.data() + done, n);
        done += n;
        a += n;
    }
    return check_faults(faults, gpa, in.size());
}

}  // namespace mpq
