#include "util/thread_reserve.h"

namespace mpq {

void ThreadReserve::Ticket::wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return done_; });
}

ThreadReserve::ThreadReserve(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { park(); });
    // Every thread parked before anyone asks: run() never misses one that is
    // still starting.
    std::unique_lock lk(mu_);
    parked_cv_.wait(lk, [&] { return idle_ == threads; });
}

ThreadReserve::~ThreadReserve() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
}

std::shared_ptr<ThreadReserve::Ticket> ThreadReserve::run(std::function<void()> fn) {
    auto t = std::make_shared<Ticket>();
    {
        std::lock_guard lk(mu_);
        // Tasks not yet picked up count against the idle threads.
        if (idle_ <= tasks_.size()) return nullptr;
        tasks_.push_back(Task{std::move(fn), t});
    }
    cv_.notify_one();
    return t;
}

unsigned ThreadReserve::idle() const {
    std::lock_guard lk(mu_);
    return idle_ > tasks_.size() ? idle_ - static_cast<unsigned>(tasks_.size()) : 0;
}

void ThreadReserve::park() {
    std::unique_lock lk(mu_);
    ++idle_;
    parked_cv_.notify_all();
    for (;;) {
        cv_.wait(lk, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) break;  // stopping
        Task t = std::move(tasks_.back());
        tasks_.pop_back();
        --idle_;
        lk.unlock();
        t.fn();
        {
            std::lock_guard tl(t.ticket->mu_);
            t.ticket->done_ = true;
        }
        t.ticket->cv_.notify_all();
        lk.lock();
        ++idle_;
    }
    --idle_;
}

}  // namespace mpq
