// Monitors on a real event loop and real sockets.
#include "monitor/monitor.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>

#include "monitor_fake_view.h"

namespace mpq::monitor {
namespace {

using testing::FakeView;

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/mpq-mon-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf " + path_).c_str()); }
    std::string file(const char* n) const { return path_ + "/" + n; }

private:
    std::string path_;
};

// A non-blocking test client; all waiting happens by pumping the loop.
class Client {
public:
    explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
    static Client unix_socket(const std::string& path) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
        EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << path;
        ::fcntl(fd.get(), F_SETFL, O_NONBLOCK);
        return Client(std::move(fd));
    }
    static Client tcp(uint16_t port) {
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
        ::fcntl(fd.get(), F_SETFL, O_NONBLOCK);
        return Client(std::move(fd));
    }
    // Returns false once the peer closed or reset.
    bool poll_read() {
        char buf[65536];
        while (true) {
            ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
            if (n > 0) {
                in.append(buf, static_cast<size_t>(n));
                continue;
            }
            if (n == 0) return eof = true, false;
            if (errno == EAGAIN) return true;
            return eof = true, false;
        }
    }
    // Sends what the socket takes; returns bytes sent.
    size_t send_some(std::string_view s) {
        ssize_t n = ::send(fd_.get(), s.data(), s.size(), MSG_NOSIGNAL);
        return n > 0 ? static_cast<size_t>(n) : 0;
    }
    void close() { fd_.reset(); }

    std::string in;
    bool eof = false;

private:
    UniqueFd fd_;
};

struct Rig {
    EventLoop loop;
    FakeView view;
    Monitors mon{loop, view};
    TempDir dir;

    template <typename Pred>
    bool pump(Pred done, int rounds = 400) {
        for (int i = 0; i < rounds; ++i) {
            if (done()) return true;
            loop.run_once(10);
        }
        return done();
    }
    bool read_until(Client& c, std::string_view needle) {
        return pump([&] {
            c.poll_read();
            return c.in.find(needle) != std::string::npos;
        });
    }
    Json qmp(Client& c, std::string_view cmd) {
        c.in.clear();
        EXPECT_EQ(c.send_some(cmd), cmd.size());
        EXPECT_TRUE(read_until(c, "\r\n")) << cmd;
        std::string line = c.in.substr(0, c.in.find("\r\n"));
        c.in.erase(0, line.size() + 2);
        return Json::parse(line);
    }
};

MonitorSpec spec(MonitorMode mode, std::string shorthand, std::string id) {
    auto c = parse_chardev_shorthand(shorthand, std::move(id));
    EXPECT_TRUE(c.ok());
    return MonitorSpec{mode, Pretty::Off, *c};
}

TEST(MonitorServer, QmpOverUnixSocket) {
    Rig r;
    std::string path = r.dir.file("qmp.sock");
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + path + ",server,nowait", "compat_monitor0")).ok());
    EXPECT_EQ(r.mon.chardevs()[0].filename, "disconnected:unix:" + path + ",server=on");
    Client c = Client::unix_socket(path);
    ASSERT_TRUE(r.read_until(c, "\r\n"));
    EXPECT_EQ(Json::parse(c.in.substr(0, c.in.find("\r\n")))["QMP"]["capabilities"], Json::array());
    c.in.clear();
    EXPECT_EQ(r.qmp(c, R"({"execute":"qmp_capabilities"})")["return"], Json::object());
    Json b = r.qmp(c, R"({"execute":"query-block","id":"b"})");
    EXPECT_EQ(b["return"][0]["device"], "d0");
    EXPECT_EQ(b["id"], "b");
    EXPECT_EQ(r.mon.chardevs()[0].filename, "unix:" + path + ",server=on");
    c.close();
    ASSERT_TRUE(r.pump([&] { return r.mon.client_count() == 0; }));
    EXPECT_EQ(r.mon.chardevs()[0].filename, "disconnected:unix:" + path + ",server=on");
    // Clients come and go: a new one gets a fresh, un-negotiated session.
    Client c2 = Client::unix_socket(path);
    ASSERT_TRUE(r.read_until(c2, "\r\n"));
    c2.in.clear();
    EXPECT_EQ(r.qmp(c2, R"({"execute":"query-name"})")["error"]["class"], "CommandNotFound");
}

TEST(MonitorServer, SeveralMonitorsAndClients) {
    Rig r;
    std::string q = r.dir.file("q.sock"), h = r.dir.file("h.sock");
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + q + ",server=on,wait=off", "c0")).ok());
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Hmp, "unix:" + h + ",server,nowait", "c1")).ok());
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "tcp:127.0.0.1:0,server,nowait", "c2")).ok());
    auto cds = r.mon.chardevs();
    ASSERT_EQ(cds.size(), 3u);
    // Port 0 was resolved to the bound port.
    std::string tcpname = cds[2].filename;
    auto colon = tcpname.rfind(':');
    uint16_t port = static_cast<uint16_t>(std::stoi(tcpname.substr(colon + 1)));
    ASSERT_NE(port, 0);

    Client a = Client::unix_socket(q), b = Client::unix_socket(q), t = Client::tcp(port);
    Client hm = Client::unix_socket(h);
    ASSERT_TRUE(r.read_until(hm, "(qemu) "));
    hm.in.clear();
    hm.send_some("info block\r\n");
    ASSERT_TRUE(r.read_until(hm, "Cache mode"));
    EXPECT_NE(hm.in.find("d0 (#block123): disk.img (raw)\r\n"), std::string::npos) << hm.in;
    for (Client* c : {&a, &b, &t}) {
        ASSERT_TRUE(r.read_until(*c, "\r\n"));
        c->in.clear();
    }
    EXPECT_EQ(r.qmp(a, R"({"execute":"qmp_capabilities"})")["return"], Json::object());
    EXPECT_EQ(r.qmp(t, R"({"execute":"qmp_capabilities"})")["return"], Json::object());
    // Events reach negotiated clients only.
    r.mon.remote_disconnected("lsi0", "EOF");
    ASSERT_TRUE(r.read_until(a, "\r\n"));
    ASSERT_TRUE(r.read_until(t, "\r\n"));
    Json ev = Json::parse(a.in.substr(0, a.in.find("\r\n")));
    EXPECT_EQ(ev["event"], "X_REMOTE_DISCONNECTED");
    EXPECT_EQ(ev["data"]["id"], "lsi0");
    EXPECT_TRUE(ev["timestamp"]["seconds"].is_number_integer());
    EXPECT_TRUE(ev["timestamp"]["microseconds"].is_number_integer());
    r.loop.run_once(0);
    b.poll_read();
    EXPECT_EQ(b.in, "");
    EXPECT_EQ(r.mon.client_count(), 4u);
}

TEST(MonitorServer, NonReadingClientIsDropped) {
    Rig r;
    std::string q = r.dir.file("q.sock");
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + q + ",server,nowait", "c0")).ok());
    Client lazy = Client::unix_socket(q);
    Client good = Client::unix_socket(q);
    ASSERT_TRUE(r.read_until(good, "\r\n"));
    good.in.clear();
    ASSERT_TRUE(r.pump([&] { return r.mon.client_count() == 2; }));
    std::string cmd = R"({"execute":"qmp_capabilities"})";
    ASSERT_EQ(lazy.send_some(cmd), cmd.size());
    // Many pipelined commands, never reading a reply: the server must queue at
    // most its bound and then let go of this client.
    std::string burst;
    for (int i = 0; i < 200; ++i) burst += R"({"execute":"query-pci"})";
    bool dropped = r.pump([&] {
        lazy.send_some(burst);
        return r.mon.client_count() == 1;
    }, 4000);
    EXPECT_TRUE(dropped);
    // The loop is still serving everyone else.
    EXPECT_EQ(r.qmp(good, R"({"execute":"qmp_capabilities"})")["return"], Json::object());
    EXPECT_EQ(r.qmp(good, R"({"execute":"query-status"})")["return"]["status"], "running");
}

TEST(MonitorServer, HugeInputGetsErrorThenDrop) {
    Rig r;
    std::string q = r.dir.file("q.sock"), h = r.dir.file("h.sock");
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + q + ",server,nowait", "c0")).ok());
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Hmp, "unix:" + h + ",server,nowait", "c1")).ok());
    Client c = Client::unix_socket(q);
    ASSERT_TRUE(r.read_until(c, "\r\n"));
    c.in.clear();
    std::string chunk = "[\"" + std::string(64 << 10, 'x');
    std::string rest(64 << 10, 'x');
    bool first = true;
    ASSERT_TRUE(r.pump([&] {
        c.send_some(first ? chunk : rest);
        first = false;
        c.poll_read();
        return c.eof;
    }, 4000));
    EXPECT_NE(c.in.find("GenericError"), std::string::npos) << c.in.substr(0, 200);

    Client hm = Client::unix_socket(h);
    ASSERT_TRUE(r.read_until(hm, "(qemu) "));
    std::string line(8192, 'a');
    hm.send_some(line);
    ASSERT_TRUE(r.pump([&] {
        hm.poll_read();
        return hm.eof;
    }));
    EXPECT_NE(hm.in.find("Error: line longer"), std::string::npos);
    ASSERT_TRUE(r.pump([&] { return r.mon.client_count() == 0; }));
}

TEST(MonitorServer, QuitRepliesThenQuits) {
    Rig r;
    std::string q = r.dir.file("q.sock");
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + q + ",server,nowait", "c0")).ok());
    Client c = Client::unix_socket(q);
    ASSERT_TRUE(r.read_until(c, "\r\n"));
    c.in.clear();
    r.qmp(c, R"({"execute":"qmp_capabilities"})");
    EXPECT_EQ(r.qmp(c, R"({"execute":"quit","id":3})")["id"], 3);
    ASSERT_TRUE(r.pump([&] { return r.view.quits == 1; }));
    ASSERT_TRUE(r.read_until(c, "SHUTDOWN"));
    Json ev = Json::parse(c.in.substr(0, c.in.find("\r\n")));
    EXPECT_EQ(ev["data"]["reason"], "host-qmp-quit");
}

TEST(MonitorServer, StaleSocketReplacedOtherFilesKept) {
    Rig r;
    std::string q = r.dir.file("q.sock");
    {
        Rig other;
        ASSERT_TRUE(other.mon.add(spec(MonitorMode::Qmp, "unix:" + q + ",server,nowait", "c0")).ok());
    }
    // A leftover socket (another run crashed) is replaced.
    UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, q.c_str(), sizeof(sa.sun_path) - 1);
    ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + q + ",server,nowait", "c0")).ok());
    std::string f = r.dir.file("regular");
    std::ofstream(f) << "keep me";
    EXPECT_FALSE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + f + ",server,nowait", "c1")).ok());
    struct stat st {};
    EXPECT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_FALSE(r.mon.add(spec(MonitorMode::Qmp, "unix:" + r.dir.file("none") , "c2")).ok());
}

TEST(MonitorServer, ClientModeConnectsOut) {
    Rig r;
    std::string p = r.dir.file("listen.sock");
    UniqueFd ls(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, p.c_str(), sizeof(sa.sun_path) - 1);
    ASSERT_EQ(::bind(ls.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    ASSERT_EQ(::listen(ls.get(), 1), 0);
    ASSERT_TRUE(r.mon.add(spec(MonitorMode::Hmp, "unix:" + p, "c0")).ok());
    UniqueFd conn(::accept4(ls.get(), nullptr, nullptr, SOCK_NONBLOCK));
    ASSERT_TRUE(conn.valid());
    Client c(std::move(conn));
    ASSERT_TRUE(r.read_until(c, "(qemu) "));
}


// What a supervisor does for a restarted worker: it holds a copy of every
// socket the monitors keep, and hands them to the successor.
struct FakeKeeper {
    std::map<uint32_t, UniqueFd> listeners;
    std::map<std::pair<uint32_t, uint32_t>, SocketKeeper::Kept> clients;

    SocketKeeper keeper() {
        SocketKeeper k;
        k.take_listener = [this](uint32_t i) {
            auto it = listeners.find(i);
            return it == listeners.end() ? UniqueFd() : UniqueFd(::dup(it->second.get()));
        };
        k.take_clients = [this](uint32_t i) {
            std::vector<SocketKeeper::Kept> out;
            for (auto& [key, c] : clients)
                if (key.first == i) out.push_back({key.second, UniqueFd(::dup(c.fd.get())), c.negotiated});
            return out;
        };
        k.keep_listener = [this](uint32_t i, int fd) { listeners[i] = UniqueFd(::dup(fd)); };
        k.keep_client = [this](uint32_t i, uint32_t key, int fd, bool negotiated) {
            auto& c = clients[{i, key}];
            if (fd >= 0) c = {key, UniqueFd(::dup(fd)), negotiated};
            c.negotiated = negotiated;
        };
        k.forget_client = [this](uint32_t i, uint32_t key) { clients.erase({i, key}); };
        return k;
    }
};

TEST(MonitorServer, KeptSocketsCarryClientsToASuccessor) {
    Rig r;
    FakeKeeper store;
    std::string q = r.dir.file("q.sock"), h = r.dir.file("h.sock");
    auto start = [&] {
        auto m = std::make_unique<Monitors>(r.loop, r.view);
        m->set_keeper(store.keeper());
        MonitorOptions mo;
        EXPECT_TRUE(*mo.consume("-qmp", "unix:" + q + ",server=on,wait=off"));
        EXPECT_TRUE(*mo.consume("-monitor", "unix:" + h + ",server=on,wait=off"));
        EXPECT_TRUE(m->start(mo).ok());
        return m;
    };
    auto first = start();
    EXPECT_EQ(store.listeners.size(), 2u);
    Client a = Client::unix_socket(q), b = Client::unix_socket(q), hm = Client::unix_socket(h);
    ASSERT_TRUE(r.read_until(a, "\r\n"));
    ASSERT_TRUE(r.read_until(b, "\r\n"));
    ASSERT_TRUE(r.read_until(hm, "(qemu) "));
    a.in.clear();
    b.in.clear();
    hm.in.clear();
    EXPECT_EQ(r.qmp(a, R"({"execute":"qmp_capabilities"})")["return"], Json::object());
    ASSERT_EQ(store.clients.size(), 3u);
    int negotiated = 0;
    for (const auto& [key, c] : store.clients) negotiated += c.negotiated;
    EXPECT_EQ(negotiated, 1);

    // The process dies; its clients keep their connections (the keeper's
    // copies), and one connects while nobody serves.
    first.reset();
    Client late = Client::unix_socket(q);
    auto second = start();
    // No second greeting; a's session is negotiated, b's is not.
    r.loop.run_once(0);
    a.poll_read();
    EXPECT_EQ(a.in, "");
    second->emit("WORKER_RESTARTED", Json{{"restarts", 1}});
    ASSERT_TRUE(r.read_until(a, "\r\n"));
    EXPECT_EQ(Json::parse(a.in.substr(0, a.in.find("\r\n")))["event"], "WORKER_RESTARTED");
    a.in.clear();
    EXPECT_EQ(r.qmp(a, R"({"execute":"query-name"})")["return"], Json::object());
    b.poll_read();
    EXPECT_EQ(b.in, "");
    EXPECT_EQ(r.qmp(b, R"({"execute":"query-name"})")["error"]["class"], "CommandNotFound");
    hm.send_some("info block\r\n");
    ASSERT_TRUE(r.read_until(hm, "Cache mode"));
    // The one that came while nobody served is greeted by the successor:
    // the listener is the same socket, not bound again.
    ASSERT_TRUE(r.read_until(late, "\r\n"));
    EXPECT_TRUE(Json::parse(late.in.substr(0, late.in.find("\r\n"))).contains("QMP"));
    EXPECT_EQ(store.clients.size(), 4u);
    // A client that hangs up is forgotten: its copy is closed.
    a.close();
    ASSERT_TRUE(r.pump([&] { return store.clients.size() == 3u; }));
    EXPECT_EQ(second->client_count(), 3u);
}

}  // namespace
}  // namespace mpq::monitor
