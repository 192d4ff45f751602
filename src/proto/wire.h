// QEMU 7.2 multi-process wire format (see README "Wire protocol"): a 16-byte
// header, a payload of at most 192 bytes, fds as SCM_RIGHTS on the first
// sendmsg. Host byte order; layouts are pinned by static_asserts.
//
// Every message is one row of MPQ_WIRE_MESSAGES at the end of this file: its
// id, name, payload type, how many fds it carries, who sends it, how it is
// answered and which negotiated feature it needs. The command enum, the
// names, the receiver's validator (channel.cc), the remote's reply rules and
// the proxy's reply expectations are all derived from that row. A new message
// is: its payload struct here (with static_asserts), its row, its case in
// the remote's dispatch (WireSession::handle, remote/wire_session.cc: a
// switch over Cmd, so the compiler asks for it) and, if our VMM sends it, a
// request in vmm/proxy_link_session.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>

namespace mpq::proto {

// MPQEXT: our extensions, negotiated by a BAR_READ that a stock remote
// answers with all-ones (size 0 is not a power of two), so stock peers never
// see anything else from us.
inline constexpr uint64_t kExtProbeAddr = 0x4d50514558540001ull;  // "MPQEXT" v1
inline constexpr uint64_t kExtReplyMagic = 0x4d50000000000000ull;   // | granted feature bits
inline constexpr uint64_t kExtReplyMagicMask = 0xffff000000000000ull;
inline constexpr uint64_t kExtFeatureMask = 0x0000ffffffffffffull;  // bits 0..47
inline constexpr uint64_t kFeatMultiDev = 1ull << 0;       // several devices per socket, SELECT_DEVICE
inline constexpr uint64_t kFeatPostedWrites = 1ull << 1;   // BAR_WRITE_POSTED
inline constexpr uint64_t kFeatRegMirror = 1ull << 2;     // MIRROR_SETUP, reads from shared memory
inline constexpr uint64_t kSupportedFeatures = kFeatMultiDev | kFeatPostedWrites | kFeatRegMirror;
inline constexpr uint64_t kStock = 0;  // a QEMU 7.2 message: needs no feature

inline constexpr size_t kDeviceIdLen = 64;
struct SelectDevice {
    char id[kDeviceIdLen];  // NUL-padded; an id of exactly 64 bytes has no NUL
};
static_assert(sizeof(SelectDevice) == kDeviceIdLen);

struct MirrorSetup {
    uint64_t page_size;  // kMirrorPageSize (reg_mirror.h): both sides agree on the layout
};
static_assert(sizeof(MirrorSetup) == 8);

inline constexpr size_t kMaxPayload = 192;  // size of QEMU's payload union
inline constexpr unsigned kMaxFdsOnWire = 8;  // QEMU's fd array
inline constexpr unsigned kMaxFdsAccepted = 7;  // stock remote requires num_fds < 8
inline constexpr unsigned kRecvFdSpace = 16;  // control space offered to recvmsg
inline constexpr uint64_t kAllOnes = ~uint64_t{0};

struct Header {
    int32_t cmd;
    uint32_t pad;  // alignment hole in QEMU's struct; zero on send, ignored on receive
    uint64_t size;
};
static_assert(sizeof(Header) == 16);
static_assert(offsetof(Header, cmd) == 0);
static_assert(offsetof(Header, size) == 8);

struct PciConf {
    uint32_t addr;
    uint32_t val;
    int32_t len;
};
static_assert(sizeof(PciConf) == 12);
static_assert(offsetof(PciConf, val) == 4);
static_assert(offsetof(PciConf, len) == 8);

struct BarAccess {
    uint64_t addr;  // absolute bus address (guest-physical, or I/O port)
    uint64_t val;
    uint32_t size;
    uint8_t memory;  // 1 = memory space, 0 = I/O space
    uint8_t pad[3];
};
static_assert(sizeof(BarAccess) == 24);
static_assert(offsetof(BarAccess, val) == 8);
static_assert(offsetof(BarAccess, size) == 16);
static_assert(offsetof(BarAccess, memory) == 20);

// BAR_READ_POSTED: a byte read the proxy answered from a prediction in the
// register mirror (proto/reg_mirror.h); the remote carries out its side
// effects in stream order.
struct PostedRead {
    BarAccess access;     // val: the value the proxy returned
    uint32_t mirror_seq;  // the mirror publication the prediction came from
    uint32_t pad;
};
static_assert(sizeof(PostedRead) == 32);
static_assert(offsetof(PostedRead, mirror_seq) == 24);

struct SyncSysmem {
    uint64_t gpa[kMaxFdsOnWire];
    uint64_t size[kMaxFdsOnWire];
    int64_t offset[kMaxFdsOnWire];
};
static_assert(sizeof(SyncSysmem) == kMaxPayload);
static_assert(offsetof(SyncSysmem, size) == 64);
static_assert(offsetof(SyncSysmem, offset) == 128);

// A payload of no bytes.
struct NoPayload {};
// RET's value: a u64 (0 = done, all-ones = refused or invalid), or nothing
// after a DEVICE_RESET.
using RetValue = uint64_t;

// Who sends a message.
enum class Dir : uint8_t { ToRemote, ToProxy };

// How the receiver of a request answers it.
enum class Answer : uint8_t {
    None,      // nothing: the sender does not wait (PCI writes are posted, setup frames are not acked)
    Ret,       // RET with a u64; all-ones when the request was invalid or refused
    RetEmpty,  // RET without payload (a u64 RET is accepted as well)
    IsReply,   // the message is the answer itself (RET)
};

// X(enum name, id, wire name, payload type, min fds, max fds, direction,
//   answer, feature that must be negotiated first (kStock: none))
#define MPQ_WIRE_MESSAGES(X)                                                                        \
    X(SyncSysmem, 0, "SYNC_SYSMEM", SyncSysmem, 1, kMaxFdsAccepted, ToRemote, None, kStock)         \
    X(Ret, 1, "RET", RetValue, 0, 0, ToProxy, IsReply, kStock)                                      \
    X(PciCfgWrite, 2, "PCI_CFGWRITE", PciConf, 0, 0, ToRemote, Ret, kStock)                         \
    X(PciCfgRead, 3, "PCI_CFGREAD", PciConf, 0, 0, ToRemote, Ret, kStock)                           \
    X(BarWrite, 4, "BAR_WRITE", BarAccess, 0, 0, ToRemote, Ret, kStock)                             \
    X(BarRead, 5, "BAR_READ", BarAccess, 0, 0, ToRemote, Ret, kStock)                               \
    X(SetIrqfd, 6, "SET_IRQFD", NoPayload, 2, 2, ToRemote, None, kStock)                            \
    X(DeviceReset, 7, "DEVICE_RESET", NoPayload, 0, 0, ToRemote, RetEmpty, kStock)                  \
    /* Addresses the following frames to the device named by the payload. */                       \
    X(SelectDevice, 64, "SELECT_DEVICE", SelectDevice, 0, 0, ToRemote, Ret, kFeatMultiDev)          \
    /* A BAR_WRITE nobody answers, carried out in stream order, so every */                         \
    /* later request on the socket sees its effect. */                                              \
    X(BarWritePosted, 65, "BAR_WRITE_POSTED", BarAccess, 0, 0, ToRemote, None, kFeatPostedWrites)   \
    /* The shared page of the selected device's register mirror */                                  \
    /* (proto/reg_mirror.h) as a sealed memfd; RET 0 when the remote */                             \
    /* publishes into it from now on, all-ones when it will not. */                                 \
    X(MirrorSetup, 66, "MIRROR_SETUP", MirrorSetup, 1, 1, ToRemote, Ret, kFeatRegMirror)             \
    /* A read with side effects the proxy answered from the mirror's */                              \
    /* prediction: carried out in stream order like a posted write. */                               \
    X(BarReadPosted, 67, "BAR_READ_POSTED", PostedRead, 0, 0, ToRemote, None, kFeatRegMirror)

// The command of a frame. A value read from the wire may be none of these
// (it is then an unknown command: message() says so).
enum class Cmd : int32_t {
#define MPQ_WIRE_ENUM(name, id, ...) name = id,
    MPQ_WIRE_MESSAGES(MPQ_WIRE_ENUM)
#undef MPQ_WIRE_ENUM
};

template <typename T>
inline constexpr uint64_t kPayloadSize = sizeof(T);
template <>
inline constexpr uint64_t kPayloadSize<NoPayload> = 0;

struct Message {
    Cmd cmd;
    const char* name;
    uint64_t payload_size;  // exact; RET may also be empty (Answer::RetEmpty)
    unsigned min_fds, max_fds;
    Dir dir;
    Answer answer;
    uint64_t feature;  // kStock, or the MPQEXT bit that must be negotiated first
};

inline constexpr Message kMessages[] = {
#define MPQ_WIRE_ROW(name, id, str, payload, min_fds, max_fds, dir, answer, feature) \
    {Cmd::name, str, kPayloadSize<payload>, min_fds, max_fds, Dir::dir, Answer::answer, feature},
    MPQ_WIRE_MESSAGES(MPQ_WIRE_ROW)
#undef MPQ_WIRE_ROW
};

// The payload type of a command, for typed access (Frame::as<Payload<...>>).
template <Cmd C>
struct PayloadOf;
#define MPQ_WIRE_PAYLOAD(name, id, str, payload, ...) \
    template <>                                       \
    struct PayloadOf<Cmd::name> {                     \
        using type = payload;                         \
    };
MPQ_WIRE_MESSAGES(MPQ_WIRE_PAYLOAD)
#undef MPQ_WIRE_PAYLOAD
template <Cmd C>
using Payload = typename PayloadOf<C>::type;

constexpr int32_t raw(Cmd c) { return static_cast<int32_t>(c); }

namespace detail {
// Command ids are small (stock 0..7, ours from 64): a row index per id, so
// that every frame's lookup (validation, dispatch, reply rule) is one load.
inline constexpr int32_t kCmdIdLimit = 128;
constexpr std::array<int8_t, kCmdIdLimit> make_row_index() {
    std::array<int8_t, kCmdIdLimit> idx{};
    for (auto& i : idx) i = -1;
    for (size_t i = 0; i < std::size(kMessages); i++) {
        int32_t id = static_cast<int32_t>(kMessages[i].cmd);
        if (id >= 0 && id < kCmdIdLimit) idx[static_cast<size_t>(id)] = static_cast<int8_t>(i);
    }
    return idx;
}
inline constexpr auto kRowIndex = make_row_index();
}  // namespace detail

// The row of `c`, nullptr for a command no row describes.
constexpr const Message* message(Cmd c) {
    int32_t id = static_cast<int32_t>(c);
    if (id < 0 || id >= detail::kCmdIdLimit) return nullptr;
    int8_t i = detail::kRowIndex[static_cast<size_t>(id)];
    return i < 0 ? nullptr : &kMessages[i];
}

// The row of a command we send: always there.
constexpr const Message& message_of(Cmd c) {
    const Message* m = message(c);
    return *m;  // every enumerator has a row (see the checks below)
}

// Whether the receiver of `c` answers with a RET whatever happens (invalid
// frames included: the sender waits for it).
constexpr bool reply_due(Cmd c) {
    const Message* m = message(c);
    return m && (m->answer == Answer::Ret || m->answer == Answer::RetEmpty);
}

// "PCI_CFGREAD", ..., "unknown command".
constexpr const char* cmd_name(Cmd c) {
    const Message* m = message(c);
    return m ? m->name : "unknown command";
}

namespace detail {
constexpr bool table_is_sound() {
    for (size_t i = 0; i < std::size(kMessages); i++) {
        const Message& m = kMessages[i];
        for (size_t j = i + 1; j < std::size(kMessages); j++)
            if (kMessages[j].cmd == m.cmd) return false;  // one row per id
        if (m.payload_size > kMaxPayload || m.min_fds > m.max_fds || m.max_fds > kMaxFdsAccepted) return false;
        // Only replies go to the proxy; a reply is not answered.
        if ((m.dir == Dir::ToProxy) != (m.answer == Answer::IsReply)) return false;
        // Stock ids are QEMU's 0..7; ours start at 64, each behind a feature.
        if ((raw(m.cmd) < 64) != (m.feature == kStock)) return false;
        if ((m.feature & ~kSupportedFeatures) != 0) return false;
        if (raw(m.cmd) < 0 || raw(m.cmd) >= kCmdIdLimit) return false;  // kRowIndex reaches it
    }
    return true;
}
}  // namespace detail
static_assert(detail::table_is_sound());
static_assert(message_of(Cmd::Ret).payload_size == sizeof(uint64_t));

}  // namespace mpq::proto
