// Supervisor and worker (`-x-worker on`): qemu-scsi-dev as two processes so
// that a device crash is not visible to the VMM.
//
//   VMM (stock QEMU or ours)
//     | unix socket(s), opened by the launcher, held by the SUPERVISOR
//     v
//   SUPERVISOR  holds: the VMM sockets, the publish memfd, the fds the VMM
//     |         sent (guest RAM memfds, irq/resample eventfds, mirror pages),
//     |         the monitors' listeners and clients
//     | fork    counts restarts, detects a poison request, gives up
//     v
//   WORKER      builds the devices from the command line, serves the
//               sockets, publishes the complete state every round
//
// With -sandbox pidns=on the spawner and the workers live in a PID namespace
// of their own under an init that only reaps; the supervisor stays outside.
//
// The worker reads the VMM socket with MSG_PEEK and consumes a round's
// request bytes only after the state that includes their effect is
// published (PublishArea below). A worker that dies is replaced by a fork of
// the supervisor, which rebuilds the devices, applies the last published
// state and the connection state, takes the fds from the supervisor's table
// and settles the last round's journal (see RoundJournal in worker.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mem/guest_memory.h"
#include "proto/channel.h"
#include "sandbox/sandbox.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::remote::worker {

// ---- The publish area: a memfd the supervisor creates and every worker
// maps shared. Two slots: a state is written into the slot not named by
// `slot`, then `seq` and `slot` switch to it (release), so a worker killed
// mid-write leaves the previous complete state in place.
inline constexpr uint64_t kAreaMagic = 0x3142555051504d4dull;  // "MMPQPUB1"
inline constexpr size_t kHeaderBytes = 4096;
inline constexpr size_t kSlotBytes = 16u << 20;

struct PublishHeader {
    uint64_t magic;
    std::atomic<uint64_t> seq;           // complete publishes
    std::atomic<uint32_t> slot;          // the slot holding publish number `seq`
    std::atomic<uint32_t> serving;       // this worker got as far as serving
    std::atomic<uint32_t> finished;      // the worker exits on purpose (quit, VMM gone)
    std::atomic<uint32_t> live_update;   // the worker left for a successor (x-worker-restart)
    std::atomic<uint32_t> handling;      // inside a request taken from a socket
    std::atomic<uint32_t> handling_conn;  // ... of this connection
    std::atomic<uint32_t> handling_off;   // ... at this offset of the round's request bytes
    std::atomic<uint64_t> consumed_seq;  // request bytes of publish `seq` consumed from the sockets
    std::atomic<uint64_t> sent_seq;      // replies of publish `seq` handed to sendmsg
    std::atomic<uint64_t> slot_len[2];
    std::atomic<uint64_t> publish_ns_total;  // time spent publishing (bench, x-query-worker)
    std::atomic<uint64_t> publishes;
    std::atomic<uint32_t> binary_chosen;  // x-worker-restart chose a binary for the successors
    std::atomic<int32_t> spare_pid;       // the spare waiting to take over, 0: none (x-query-worker)
    // The worker's pid as the supervisor (and ps) sees it: with pidns=on the
    // worker's own getpid() is its number inside the namespace.
    std::atomic<int32_t> worker_pid;
};
static_assert(sizeof(PublishHeader) <= kHeaderBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// ---- What one connection's round left behind, stored with the state.
struct ConnJournal {
    uint64_t features = 0;
    uint32_t selected = 0;
    uint64_t posted_done = 0;
    std::vector<uint8_t> request;  // the bytes of the frames the round handled
    std::vector<uint8_t> replies;  // the encoded replies of the round
};

// Slot layout: u32 magic "JRNL" | u32 connections | per connection:
// u64 features | u32 selected | u64 posted_done | u32 len + request bytes |
// u32 len + reply bytes; then u32 len + the device-state blob.
std::vector<uint8_t> encode_slot(std::span<const ConnJournal> conns, std::span<const uint8_t> state);
// The same into `out`; the bytes written, or an error when they do not fit.
Result<size_t> encode_slot_into(std::span<const ConnJournal> conns, std::span<const uint8_t> state,
                                std::span<uint8_t> out);
struct SlotView {
    std::vector<ConnJournal> conns;
    std::span<const uint8_t> state;
};
// Checked like any input: bounded counts and lengths.
Result<SlotView> decode_slot(std::span<const uint8_t> slot);

// ---- Journal settling, without I/O (unit-tested): what a successor does
// with the head of a socket given the last published round.
enum class HeadVerdict : uint8_t {
    Consume,      // the head is the round's request: consume it, do not re-apply
    AlreadyGone,  // the request was consumed already
    NotYet,       // the head is a prefix of the request: wait for the rest of the peek
};
HeadVerdict judge_head(std::span<const uint8_t> head, std::span<const uint8_t> request);

// ---- Restart policy (unit-tested): counts deaths in a sliding window.
class RestartPolicy {
public:
    RestartPolicy(unsigned max_restarts, uint64_t window_ns) : max_(max_restarts), window_(window_ns) {}
    // A worker died at `now_ns`: false if that makes too many in the window.
    bool allow(uint64_t now_ns);
    unsigned total() const { return total_; }

private:
    unsigned max_;
    uint64_t window_;
    std::vector<uint64_t> recent_;
    unsigned total_ = 0;
};

// Poison detection (unit-tested): a request that takes down two workers in
// a row. `handling` and `seq` are the publish area's at the death.
class PoisonDetector {
public:
    // True: the request at the head of the socket killed this worker and
    // the one before it; the next worker answers it as a dead device would.
    bool died(bool handling, uint64_t seq);
    void reset() { last_valid_ = false; }

private:
    bool last_valid_ = false;
    uint64_t last_seq_ = 0;
};

// ---- Fds the VMM sent, held by the supervisor (sent to it by the worker
// before the worker acts on them).
// The monitors' sockets too, so that their clients stay connected across a
// restart: MonListener (conn: the chardev's index), MonClient (conn: index,
// dev: the client's key, gpa[0]: 1 once QMP negotiation is done; no fd: only
// that changed), MonForget (the client is gone: its copy is closed).
enum class HandoffKind : uint32_t {
    Sysmem = 1,
    Irqfd = 2,
    Mirror = 3,
    MonListener = 4,
    MonClient = 5,
    MonForget = 6,
};
struct HandoffMsg {
    uint32_t kind;
    uint32_t conn;
    uint32_t dev;
    uint32_t nfds;
    uint64_t gpa[proto::kMaxFdsOnWire];
    uint64_t size[proto::kMaxFdsOnWire];
    int64_t offset[proto::kMaxFdsOnWire];
};
static_assert(sizeof(HandoffMsg) == 16 + 24 * proto::kMaxFdsOnWire);

struct KeptMonitorClient {
    UniqueFd fd;
    bool negotiated = false;
};
struct FdTable {
    // A worker may have been taken over by a guest: what it can make the
    // supervisor hold is bounded (entries beyond these are not kept; their
    // fds are closed).
    static constexpr size_t kMaxMonitorSockets = 64;
    static constexpr size_t kMaxDeviceFds = 256;  // irq pairs, and mirror pages, each

    std::vector<RamRegion> sysmem;  // fds owned by sysmem_fds
    std::vector<UniqueFd> sysmem_fds;
    std::map<std::pair<uint32_t, uint32_t>, std::pair<UniqueFd, UniqueFd>> irqfds;
    std::map<std::pair<uint32_t, uint32_t>, UniqueFd> mirrors;
    std::map<uint32_t, UniqueFd> mon_listeners;  // by chardev index
    std::map<std::pair<uint32_t, uint32_t>, KeptMonitorClient> mon_clients;  // by (index, key)
};
// A hand-over of `kind` for (conn, dev) announcing `nfds` fds; `flag` goes
// in gpa[0] (MonClient: QMP negotiation done). Not for Sysmem (regions).
HandoffMsg make_handoff(HandoffKind kind, uint32_t conn, uint32_t dev, uint32_t nfds, uint64_t flag = 0);
// Files one handoff (and its fds, which it takes or closes) in the table; a
// message that does not fit its kind is dropped.
void apply_handoff(const HandoffMsg& m, std::vector<UniqueFd>& fds, FdTable& t);

// ---- The worker's view, valid in a worker process (null without -x-worker on).
struct LastExit {
    bool valid = false;
    int signal = 0;  // 0: exited with `status`
    int status = 0;
    std::string cause;
};
struct Context {
    PublishHeader* hdr = nullptr;
    uint8_t* slots = nullptr;
    int handoff_fd = -1;
    bool successor = false;
    // A spare: started ahead of time, it builds its devices and then waits
    // (await_go) until the supervisor makes it the successor of a dead worker.
    bool spare = false;
    bool poison_pending = false;  // answer one request as a dead device:
    uint32_t poison_conn = 0;     // the one of this connection
    uint32_t poison_off = 0;      // at this offset of the unconsumed bytes
    unsigned restarts = 0;
    LastExit last_exit;
    uint64_t died_ns = 0;  // when the predecessor's death was seen
    bool first_served = false;  // a successor answered its first request (logged once)
    FdTable* table = nullptr;
    int test_fault_fd = -1;  // TEST ONLY: a byte on it makes the worker fault
    // TEST ONLY: die inside the next round with a request, right after its
    // publish ('p') or after its consume, before the sent mark ('c').
    char test_die_at = 0;
    // x-worker-restart: leave at the end of the next round, after its
    // replies went out; the supervisor starts a successor.
    bool leave_after_publish = false;
    uint64_t test_poison_value = 0;
    bool test_poison = false;

    std::span<const uint8_t> slot(uint32_t i) const { return {slots + size_t{i} * kSlotBytes, kSlotBytes}; }
};
// The context of this process when it is a worker, else nullptr.
Context* context();

// In a spare, after its devices are built: waits until the supervisor sends
// the fd table and the context of the worker it replaces, and returns as
// that worker's successor. Never returns if the supervisor gives up on it.
void await_go();
// A spare whose devices cannot be built ahead of time (a drive with format
// metadata the live worker keeps changing, e.g. qcow2) leaves with this
// status; the supervisor then starts successors after a death instead.
inline constexpr int kNoSpareExit = 75;

struct SupervisorOptions {
    // A worker killed every 0.5 s (20 in 10 s) is carried on; a crash loop
    // (a restart every few ms) is stopped within a fraction of a second.
    unsigned max_restarts = 30;
    uint64_t window_ns = 10'000'000'000ull;
    int test_fault_fd = -1;
    uint64_t test_poison_value = 0;
    bool test_poison = false;
    // -sandbox: on puts the supervisor under its own allowlist
    // (sandbox::Role::WorkerSupervisor).
    sandbox::SandboxOptions sandbox;
    // The command line, for a successor exec'd from another binary (live
    // update): it is started with the same options.
    std::vector<std::string> argv;
};
// Forks the first worker and supervises it; returns only in a worker (the
// first or a successor), with context() set. The supervisor itself exits
// with the worker's status when a worker ends on purpose, or 1 when it gives
// up. Must run before any thread exists.
Status run_supervisor(const SupervisorOptions& opts);

// A worker exec'd from a new binary (live update), told by the spawner
// through the hidden option -x-worker-successor SPEC: takes the publish area,
// the hand-over socket and the fd table the spawner passed, sets context().
Status adopt(const SupervisorOptions& opts, std::string_view spec);

// The hidden option a binary answers (and exits) with its device state
// format version, which the spawner asks before a live update to it.
inline constexpr std::string_view kVersionOption = "x-worker-state-version";
inline constexpr std::string_view kVersionPrefix = "mpq-state-version ";
// Parses that answer (unit-tested); nullopt when it is not one.
std::optional<uint32_t> parse_version_answer(std::string_view out);

// Worker side of x-worker-restart binary=...: asks the spawner (through the
// supervisor) to check `path`, or the executable open as `fd` if valid, and
// to start successors from it. Fails, with nothing changed, when the binary
// cannot be run or writes another state format. Blocking (bounded).
Status choose_binary(const std::string& path, int fd);

// Worker side: hands the fds of a frame to the supervisor before the
// worker acts on them. Blocking; false if the supervisor is gone.
bool hand_over(const HandoffMsg& m, std::span<const int> fds);

// Encodes one publish straight into the free slot and makes it current.
Status publish(std::span<const ConnJournal> conns, std::span<const uint8_t> state);
// The last complete publish (empty if none yet).
std::span<const uint8_t> last_published();

}  // namespace mpq::remote::worker
