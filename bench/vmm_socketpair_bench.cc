// The floor for one proxied register access: a request/reply round trip of
// mpqemu-sized frames (40-byte BAR_READ out, 24-byte RET back) between two
// processes over a unix socketpair, with plain blocking write/read and no
// protocol handling. bench/run-qtest-bench.sh compares the measured cost of
// a proxied MMIO read against this.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace {

constexpr size_t kRequest = 16 + 24;  // header + BarAccess
constexpr size_t kReply = 16 + 8;     // header + u64

bool read_all(int fd, void* buf, size_t n) {
    auto* p = static_cast<char*>(buf);
    while (n) {
        ssize_t r = ::read(fd, p, n);
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

void BM_SocketpairRoundTrip(benchmark::State& state) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        state.SkipWithError("socketpair");
        return;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(sv[0]);
        char req[kRequest], rep[kReply] = {1};
        while (read_all(sv[1], req, sizeof req)) {
            if (::write(sv[1], rep, sizeof rep) != static_cast<ssize_t>(sizeof rep)) break;
        }
        ::_exit(0);
    }
    ::close(sv[1]);
    char req[kRequest] = {5}, rep[kReply];
    for (auto _ : state) {
        if (::write(sv[0], req, sizeof req) != static_cast<ssize_t>(sizeof req) ||
            !read_all(sv[0], rep, sizeof rep)) {
            state.SkipWithError("peer gone");
            break;
        }
    }
    ::close(sv[0]);
    ::waitpid(pid, nullptr, 0);
}
BENCHMARK(BM_SocketpairRoundTrip)->UseRealTime()->MinTime(1.0);

}  // namespace
