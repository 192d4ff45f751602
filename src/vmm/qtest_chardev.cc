#include "vmm/qtest_chardev.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::vmm {

namespace {

Result<sockaddr_un> unix_addr(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof a.sun_path) return fail("bad unix socket path '{}'", path);
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

Result<bool> on_off(std::string_view v) {
    if (v == "on" || v == "yes" || v == "true" || v.empty()) return true;
    if (v == "off" || v == "no" || v == "false") return false;
    return fail("'{}' is not on/off", v);
}

}  // namespace

Result<QtestChardevSpec> parse_qtest_chardev(std::string_view spec) {
    QtestChardevSpec s;
    if (spec == "stdio") {
        s.kind = QtestChardevSpec::Kind::Stdio;
        return s;
    }
    if (!spec.starts_with("unix:")) {
        return fail("-qtest {}: only unix:PATH[,server=on][,wait=off] and stdio are supported", spec);
    }
    spec.remove_prefix(5);
    size_t comma = spec.find(',');
    s.path = std::string(spec.substr(0, comma));
    while (comma != std::string_view::npos) {
        spec.remove_prefix(comma + 1);
        comma = spec.find(',');
        std::string_view item = spec.substr(0, comma);
        std::string_view key = item.substr(0, item.find('='));
        std::string_view val = item.find('=') == std::string_view::npos ? "" : item.substr(item.find('=') + 1);
        if (key == "server" || key == "nowait" || key == "wait") {
            auto b = on_off(val);
            if (!b.ok()) return fail("-qtest: {}: {}", key, b.error().message);
            if (key == "server") s.kind = *b ? QtestChardevSpec::Kind::UnixServer : QtestChardevSpec::Kind::UnixClient;
            else if (key == "nowait") s.wait = !*b;
            else s.wait = *b;
        } else {
            return fail("-qtest: unknown socket option '{}'", key);
        }
    }
    if (s.path.empty()) return fail("-qtest: missing socket path");
    return s;
}

Result<std::unique_ptr<QtestChardev>> QtestChardev::open(EventLoop& loop, QtestServer& server,
                                                         const QtestChardevSpec& spec) {
    std::unique_ptr<QtestChardev> c(new QtestChardev(loop, server));
    c->spec_ = spec;
    switch (spec.kind) {
    case QtestChardevSpec::Kind::Stdio: {
        int in = ::dup(0);
        if (in < 0) return fail_errno(errno, "qtest: stdin: {}", std::strerror(errno));
        c->attach(UniqueFd(in), 1);
        break;
    }
    case QtestChardevSpec::Kind::UnixClient: {
        auto a = unix_addr(spec.path);
        if (!a.ok()) return a.take_error();
        UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!s) return fail_errno(errno, "qtest: socket: {}", std::strerror(errno));
        if (::connect(s.get(), reinterpret_cast<sockaddr*>(&*a), sizeof *a) != 0) {
            return fail_errno(errno, "Failed to connect to '{}': {}", spec.path, std::strerror(errno));
        }
        int fd = s.get();
        c->attach(std::move(s), fd);
        break;
    }
    case QtestChardevSpec::Kind::UnixServer: {
        auto a = unix_addr(spec.path);
        if (!a.ok()) return a.take_error();
        c->listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!c->listen_) return fail_errno(errno, "qtest: socket: {}", std::strerror(errno));
        ::unlink(spec.path.c_str());
        if (::bind(c->listen_.get(), reinterpret_cast<sockaddr*>(&*a), sizeof *a) != 0 ||
            ::listen(c->listen_.get(), 1) != 0) {
            return fail_errno(errno, "Failed to bind socket to {}: {}", spec.path, std::strerror(errno));
        }
        if (spec.wait) {
            log::info("QEMU waiting for connection on: disconnected:unix:{},server=on", spec.path);
            c->on_accept();
        } else {
            QtestChardev* self = c.get();
            loop.add_fd(c->listen_.get(), FdEvents::Read, [self](uint32_t) { self->on_accept(); });
        }
        break;
    }
    }
    return c;
}

QtestChardev::~QtestChardev() {
    detach();
    if (listen_ && spec_.kind == QtestChardevSpec::Kind::UnixServer && !spec_.wait) loop_.remove_fd(listen_.get());
}

void QtestChardev::on_accept() {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    if (conn_) {  // one client at a time, as QEMU's socket chardev
        ::close(fd);
        return;
    }
    attach(UniqueFd(fd), fd);
}

void QtestChardev::attach(UniqueFd in, int out_fd) {
    conn_ = std::move(in);
    in_fd_ = conn_.get();
    out_fd_ = out_fd;
    server_.reset_connection();
    watched_ = loop_.add_fd(in_fd_, FdEvents::Read, [this](uint32_t) { on_readable(); });
    if (!watched_) log::error("qtest: cannot watch fd {}", in_fd_);
}

void QtestChardev::detach() {
    if (watched_) loop_.remove_fd(in_fd_);
    watched_ = false;
    conn_.reset();
    in_fd_ = out_fd_ = -1;
}

void QtestChardev::on_readable() {
    char buf[65536];
    ssize_t n = ::read(in_fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        // QEMU keeps running when the qtest client goes away (tests kill it).
        detach();
        return;
    }
    in_feed_ = true;
    server_.feed(std::string_view(buf, static_cast<size_t>(n)));
    in_feed_ = false;
    flush();
}

void QtestChardev::flush() {
    std::string& out = server_.output();
    if (out.empty()) return;
    if (out_fd_ < 0) {
        out.clear();
        return;
    }
    size_t off = 0;
    while (off < out.size()) {
        ssize_t n = ::write(out_fd_, out.data() + off, out.size() - off);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd p{out_fd_, POLLOUT, 0};
            ::poll(&p, 1, 1000);
            continue;
        }
        detach();  // client gone
        break;
    }
    out.clear();
}

}  // namespace mpq::vmm
