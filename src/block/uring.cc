// io_uring engine for raw files: reads, writes and flushes go straight to the
// kernel without an I/O thread; completions are reaped on the loop thread
// when the ring's eventfd fires.
#include <liburing.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "block/backend_impl.h"
#include "block/file.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "util/uring_restrict.h"

namespace mpq::block {

namespace {

constexpr unsigned kRingEntries = 128;

class Uring final : public UringEngine {
public:
    Uring(EventLoop& loop, FileDriver& file, Complete complete, void* ctx)
        : loop_(loop), file_(file), complete_(complete), ctx_(ctx) {}

    ~Uring() override {
        if (registered_) loop_.remove_fd(efd_.get());
        if (ring_ok_) {
            wait_all();
            io_uring_queue_exit(&ring_);
        }
    }

    Status init() {
        // Created disabled and restricted before first use to what this
        // engine submits (util/uring_restrict.h).
        io_uring_params p{};
        p.flags = IORING_SETUP_R_DISABLED;
        int r = io_uring_queue_init_params(kRingEntries, &ring_, &p);
        if (r < 0) return fail_errno(-r, "io_uring_setup: {}", std::strerror(-r));
        ring_ok_ = true;
        efd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!efd_) return fail_errno(errno, "eventfd: {}", std::strerror(errno));
        r = io_uring_register_eventfd(&ring_, efd_.get());
        if (r < 0) return fail_errno(-r, "io_uring_register_eventfd: {}", std::strerror(-r));
        const uint8_t ops[] = {IORING_OP_READ, IORING_OP_WRITE, IORING_OP_FSYNC};
        MPQ_TRY(restrict_uring(ring_.ring_fd, ops, 0));
        if (!loop_.add_fd(efd_.get(), FdEvents::Read, [this](uint32_t) { on_event(); }))
            return fail("cannot watch the io_uring eventfd");
        registered_ = true;
        return {};
    }

    JobPtr submit(JobPtr j) override {
        switch (j->kind) {
            case JobKind::Read:
            case JobKind::Write:
                // Unaligned O_DIRECT requests need the driver's bounce buffers.
                if (!file_.is_aligned(j->off, j->buf, j->len) || j->len == 0 ||
                    j->len > (1u << 30))
                    return j;
                if (j->kind == JobKind::Write && file_.read_only()) return j;
                // With a DIO alignment above 512, guest-sized writes may need
                // the driver's read-modify-write, which an unlocked ring write
                // to the same block could race: writes then stay on threads.
                if (j->kind == JobKind::Write && file_.direct() && file_.alignment() > 512)
                    return j;
                break;
            case JobKind::Flush:
                if (file_.flush_is_noop() || file_.read_only()) return j;
                break;
            default:
                return j;
        }
        ++in_flight_;
        pending_.push_back(std::move(j));
        push_pending();
        return nullptr;
    }

    unsigned in_flight() const override { return in_flight_; }

    void wait_all() override {
        while (in_flight_ > 0) {
            push_pending();
            io_uring_cqe* cqe = nullptr;
            int r = io_uring_wait_cqe(&ring_, &cqe);
            if (r < 0 && r != -EINTR) {
                log::error("'{}': io_uring wait failed: {}", file_.path(), std::strerror(-r));
                return;
            }
            reap();
        }
    }

private:
    void prep(Job* j) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        // Callers checked there is room.
        uint64_t done = j->progress;
        switch (j->kind) {
            case JobKind::Read:
                io_uring_prep_read(sqe, file_.fd(), j->buf + done,
                                   static_cast<unsigned>(j->len - done), j->off + done);
                break;
            case JobKind::Write:
                io_uring_prep_write(sqe, file_.fd(), j->buf + done,
                                    static_cast<unsigned>(j->len - done), j->off + done);
                break;
            default:
                io_uring_prep_fsync(sqe, file_.fd(), IORING_FSYNC_DATASYNC);
                break;
        }
        io_uring_sqe_set_data(sqe, j);
    }

    void push_pending() {
        bool any = false;
        while (!pending_.empty() && io_uring_sq_space_left(&ring_) > 0) {
            Job* j = pending_.front().release();
            pending_.pop_front();
            prep(j);
            any = true;
        }
        if (any) {
            int r;
            do {
                r = io_uring_submit(&ring_);
            } while (r == -EINTR || r == -EAGAIN);
            if (r < 0) log::error("'{}': io_uring_submit: {}", file_.path(), std::strerror(-r));
        }
    }

    void on_event() {
        uint64_t v;
        while (::read(efd_.get(), &v, sizeof v) < 0 && errno == EINTR) {
        }
        reap();
        push_pending();
    }

    void reap() {
        io_uring_cqe* cqe = nullptr;
        while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe) {
            Job* j = static_cast<Job*>(io_uring_cqe_get_data(cqe));
            int res = cqe->res;
            io_uring_cqe_seen(&ring_, cqe);
            handle(JobPtr(j), res);
        }
    }

    void handle(JobPtr j, int res) {
        if (res == -EINTR || res == -EAGAIN) {
            pending_.push_front(std::move(j));
            return;
        }
        if (res < 0) {
            j->result = fail_errno(-res, "'{}': {} at {} failed: {}", file_.path(),
                                   j->kind == JobKind::Read ? "read" : j->kind == JobKind::Write ? "write" : "flush",
                                   j->off + j->progress, std::strerror(-res));
        } else if (j->kind == JobKind::Read || j->kind == JobKind::Write) {
            if (res == 0) {
                if (j->kind == JobKind::Read) {
                    // End of file: the rest reads as zeroes.
                    std::memset(j->buf + j->progress, 0, j->len - j->progress);
                    j->progress = j->len;
                } else {
                    j->result = fail_errno(ENOSPC, "'{}': write at {} made no progress",
                                           file_.path(), j->off + j->progress);
                }
            } else {
                j->progress += static_cast<uint64_t>(res);
                // A short write is resubmitted for the rest: the request
                // completes only when all of it reached the file.
                if (j->progress < j->len) {
                    pending_.push_back(std::move(j));
                    return;
                }
            }
            if (j->kind == JobKind::Write && j->result.ok()) file_.note_written(j->off + j->len);
        }
        j->end_ns = monotonic_ns();
        --in_flight_;
        complete_(ctx_, std::move(j));
    }

    EventLoop& loop_;
    FileDriver& file_;
    Complete complete_;
    void* ctx_;
    io_uring ring_{};
    bool ring_ok_ = false;
    bool registered_ = false;
    UniqueFd efd_;
    std::deque<JobPtr> pending_;
    unsigned in_flight_ = 0;
};

}  // namespace

std::unique_ptr<UringEngine> make_uring_engine(EventLoop& loop, FileDriver& file,
                                               UringEngine::Complete complete, void* ctx,
                                               UringChoice why) {
    auto u = std::make_unique<Uring>(loop, file, complete, ctx);
    Status st = u->init();
    if (!st) {
        if (why == UringChoice::Auto) return nullptr;  // threads, as the user did not choose
        log::info("'{}': io_uring not available ({}), using I/O threads", file.path(),
                  st.error().message);
        return nullptr;
    }
    return u;
}

}  // namespace mpq::block
