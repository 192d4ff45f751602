#include "remote/irq_line.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::remote {

EventfdIrqLine::~EventfdIrqLine() {
    if (resample_) loop_.remove_fd(resample_.get());
}

void EventfdIrqLine::set_level(bool asserted) {
    bool rising = asserted && !level_;
    level_ = asserted;
    if (rising) signal();
}

void EventfdIrqLine::signal() {
    if (!irq_) return;
    uint64_t one = 1;
    ssize_t n;
    do {
        n = ::write(irq_.get(), &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    // EAGAIN: the counter is saturated, the consumer has a pending event anyway.
    if (n == sizeof one) signals_++;
}

void EventfdIrqLine::on_resample() {
    uint64_t v;
    ssize_t n;
    do {
        n = ::read(resample_.get(), &v, sizeof v);
    } while (n < 0 && errno == EINTR);
    if (n != sizeof v) return;  // spurious wake-up
    if (level_) signal();
}

void EventfdIrqLine::set_fds(UniqueFd irq, UniqueFd resample) {
    if (resample_) loop_.remove_fd(resample_.get());
    // We poll: a blocking read on a spurious wake-up must never stall the
    // loop. (The flag is shared with the proxy's copy; stock QEMU creates
    // these non-blocking itself.)
    for (int fd : {irq.get(), resample.get()}) {
        int fl = ::fcntl(fd, F_GETFL);
        if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
    irq_ = std::move(irq);
    resample_ = std::move(resample);
    if (!loop_.add_fd(resample_.get(), FdEvents::Read, [this](uint32_t) { on_resample(); }))
        log::error("SET_IRQFD: cannot watch the resample eventfd");
    if (level_) signal();
}

}  // namespace mpq::remote
