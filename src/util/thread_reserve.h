// Threads started early and parked, for work that begins after the process
// can no longer start threads (the remote's sandbox sets RLIMIT_NPROC to 0):
// a drive added at run time borrows its I/O workers here and gives them back
// when it is closed.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mpq {

class ThreadReserve {
public:
    // One borrowed thread: wait() returns once its function has returned.
    class Ticket {
    public:
        void wait();

    private:
        friend class ThreadReserve;
        std::mutex mu_;
        std::condition_variable cv_;
        bool done_ = false;
    };

    explicit ThreadReserve(unsigned threads);
    ~ThreadReserve();
    ThreadReserve(const ThreadReserve&) = delete;
    ThreadReserve& operator=(const ThreadReserve&) = delete;

    // Runs `fn` on a parked thread; nullptr when every thread is lent out.
    std::shared_ptr<Ticket> run(std::function<void()> fn);
    unsigned idle() const;
    unsigned size() const { return static_cast<unsigned>(threads_.size()); }

private:
    struct Task {
        std::function<void()> fn;
        std::shared_ptr<Ticket> ticket;
    };
    void park();

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::condition_variable parked_cv_;
    std::vector<Task> tasks_;
    unsigned idle_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace mpq
