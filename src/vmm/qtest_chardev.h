// Transport of the qtest protocol: `-qtest unix:PATH` (we connect, the test
// listens, as with QEMU's default client socket), `unix:PATH,server=on`
// (we listen), or `stdio`. Reads are driven by the event loop; replies and
// asynchronous IRQ lines are written in order.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "util/result.h"
#include "util/unique_fd.h"
#include "vmm/qtest.h"

namespace mpq {
class EventLoop;
}

namespace mpq::vmm {

struct QtestChardevSpec {
    enum class Kind : uint8_t { UnixClient, UnixServer, Stdio };
    Kind kind = Kind::UnixClient;
    std::string path;
    bool wait = true;  // server: block until the first client connects
};

Result<QtestChardevSpec> parse_qtest_chardev(std::string_view spec);

class QtestChardev {
public:
    static Result<std::unique_ptr<QtestChardev>> open(EventLoop& loop, QtestServer& server,
                                                      const QtestChardevSpec& spec);
    ~QtestChardev();

    // Writes pending output now (IRQ lines raised outside a command).
    void flush();
    bool in_command() const { return in_feed_; }

private:
    QtestChardev(EventLoop& loop, QtestServer& server) : loop_(loop), server_(server) {}
    void on_readable();
    void on_accept();
    void attach(UniqueFd in, int out_fd);
    void detach();

    EventLoop& loop_;
    QtestServer& server_;
    QtestChardevSpec spec_;
    UniqueFd listen_;
    UniqueFd conn_;
    int in_fd_ = -1, out_fd_ = -1;
    bool watched_ = false;
    bool in_feed_ = false;
    std::string rbuf_;
};

}  // namespace mpq::vmm
