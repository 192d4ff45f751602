// The monitors of one process: every -monitor/-qmp/-mon chardev, their
// listening sockets and clients on the event loop, and event broadcast.
//
// I/O is non-blocking. Each client's pending output is bounded: a client that
// stops reading is dropped once kMaxPendingOutput bytes are queued, so it can
// never stall the loop or the devices on it. Inputs are bounded too (QMP
// message size and nesting, HMP line length): a client exceeding them gets an
// error and is dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "monitor/chardev_spec.h"
#include "monitor/commands.h"
#include "monitor/hmp.h"
#include "monitor/machine_view.h"
#include "monitor/qmp.h"
#include "util/event_loop.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::monitor {

// Where a process that is replaced by a successor keeps its monitor sockets
// (qemu-scsi-dev -x-worker on: in the supervisor), so that the successor
// serves the same listeners and the same clients, which never notice.
// Chardevs are named by their position among the process's monitors; clients
// by a key that stays unique over the process and its successors.
struct SocketKeeper {
    struct Kept {
        uint32_t key = 0;
        UniqueFd fd;
        bool negotiated = false;  // QMP: capabilities negotiation is done
    };
    // What a predecessor kept for chardev `index`: its listening socket (or
    // an empty fd) and its clients.
    std::function<UniqueFd(uint32_t index)> take_listener;
    std::function<std::vector<Kept>(uint32_t index)> take_clients;
    // Keeps a copy of `fd` (the caller keeps using its own).
    std::function<void(uint32_t index, int fd)> keep_listener;
    // `fd` < 0: only the client's negotiation state changed.
    std::function<void(uint32_t index, uint32_t key, int fd, bool negotiated)> keep_client;
    // The client is gone on purpose (it hung up, or was dropped): the copy is closed.
    std::function<void(uint32_t index, uint32_t key)> forget_client;

    bool active() const { return static_cast<bool>(take_listener); }
};

class Monitors final : public EventSink {
public:
    static constexpr size_t kMaxPendingOutput = 1 << 20;
    static constexpr unsigned kMaxClientsPerChardev = 8;
    // How often block stats are compared to report BLOCK_IO_ERROR.
    static constexpr uint64_t kIoErrorPollNs = 200'000'000;

    // Whether listening unix sockets are removed when the monitors go away
    // (QEMU does). A sandboxed process may not touch paths by then.
    enum class UnlinkAtExit : uint8_t { Yes, No };

    Monitors(EventLoop& loop, MachineView& view, UnlinkAtExit unlink = UnlinkAtExit::Yes);
    ~Monitors() override;
    Monitors(const Monitors&) = delete;
    Monitors& operator=(const Monitors&) = delete;

    // Before start(): listeners and clients are taken from and kept in `k`.
    void set_keeper(SocketKeeper k) { keeper_ = std::move(k); }
    // Opens every monitor of `opts` (finish() is called if needed). A server
    // chardev with wait=on blocks here until its first client connects, as
    // QEMU, unless its listener was kept by a predecessor.
    Status start(MonitorOptions& opts);
    Status add(const MonitorSpec& spec);

    // EventSink: broadcasts {"event", "data", "timestamp"} to negotiated QMP clients.
    void emit(std::string_view event, Json data) override;
    // Shorthands for the mains' hooks.
    void shutdown_event(std::string_view reason, bool guest = false);
    void reset_event(std::string_view reason, bool guest = false);
    void remote_disconnected(std::string_view device_id, std::string_view reason);
    void block_io_error(std::string_view device, std::string_view node, std::string_view op,
                        std::string_view reason);

    std::vector<ChardevInfo> chardevs() const;
    const QmpDispatcher& dispatcher() const { return qmp_; }
    // Runs an HMP line (human-monitor-command), "\r\n" line ends.
    std::string run_hmp(std::string_view line) { return to_crlf(hmp_.run(line)); }
    size_t client_count() const;
    // Best effort: pushes queued output out before the process exits.
    void flush();

private:
    struct Client;
    struct Chardev;

    // Whether a client is new (greeted, and kept if there is a keeper) or a
    // predecessor's (no greeting: it had one).
    enum class Arrival : uint8_t { New, Resumed };

    Status add_at(const MonitorSpec& spec, uint32_t index);
    void accept_clients(Chardev& cd);
    void attach_client(Chardev& cd, UniqueFd in, int out_fd, bool own_out, Arrival arrival = Arrival::New,
                       uint32_t key = 0, bool negotiated = false);
    void on_client_io(Chardev& cd, Client& c, uint32_t events);
    void queue(Chardev& cd, Client& c, std::string_view bytes);
    void try_write(Client& c);
    void update_interest(Client& c);
    void drop(Chardev& cd, Client& c);
    void reap();
    void poll_io_errors();
    void arm_poll();

    EventLoop& loop_;
    MachineView& view_;
    QmpDispatcher qmp_;
    Hmp hmp_;
    CommandEnv env_;
    std::vector<std::unique_ptr<Chardev>> chardevs_;
    std::shared_ptr<bool> alive_;
    UnlinkAtExit unlink_at_exit_;
    SocketKeeper keeper_;
    uint32_t next_key_ = 1;
    bool reap_pending_ = false;
    EventLoop::TimerId poll_timer_ = 0;
    struct ErrSnapshot {
        std::string device;
        uint64_t rd = 0, wr = 0, flush = 0;
    };
    std::vector<ErrSnapshot> err_snap_;
};

}  // namespace mpq::monitor
