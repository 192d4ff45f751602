// QEMU 7.2 multi-process wire format (see README "Wire protocol"): a 16-byte
// header, a payload of at most 192 bytes, fds as SCM_RIGHTS on the first
// sendmsg. Host byte order; layouts are pinned by static_asserts.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpq::proto {

enum class Cmd : int32_t {
    SyncSysmem = 0,   // proxy -> remote, 1..7 fds, no reply
    Ret = 1,          // remote -> proxy, u64 (or empty after DEVICE_RESET)
    PciCfgWrite = 2,  // PciConf, reply RET 0 / all-ones
    PciCfgRead = 3,   // PciConf, reply RET value
    BarWrite = 4,     // BarAccess, reply RET 0 / all-ones
    BarRead = 5,      // BarAccess, reply RET value
    SetIrqfd = 6,     // 2 fds (irq, resample), no reply
    DeviceReset = 7,  // reply RET with size 0
};
inline constexpr int32_t kNumStockCmds = 8;

// mpqemu extension. Negotiated by a BAR_READ a
// stock remote answers with all-ones (size 0 is not a power of two), so stock
// peers never see anything else from us.
inline constexpr int32_t kCmdSelectDevice = 64;  // payload: device id, NUL-padded, 64 bytes
// A BAR write the remote does not answer (PCI writes are posted): payload
// BarAccess as BAR_WRITE. Carried out in stream order, so every later request
// on the socket sees its effect.
inline constexpr int32_t kCmdBarWritePosted = 65;
// Hands the remote the shared page of the selected device's register mirror
// (proto/reg_mirror.h): payload MirrorSetup, 1 fd (a sealed memfd), RET 0 when
// the remote publishes into it from now on, all-ones when it will not.
inline constexpr int32_t kCmdMirrorSetup = 66;
inline constexpr size_t kDeviceIdLen = 64;
inline constexpr uint64_t kExtProbeAddr = 0x4d50514558540001ull;  // "MPQEXT" v1
inline constexpr uint64_t kExtReplyMagic = 0x4d50000000000000ull;   // | granted feature bits
inline constexpr uint64_t kExtReplyMagicMask = 0xffff000000000000ull;
inline constexpr uint64_t kExtFeatureMask = 0x0000ffffffffffffull;  // bits 0..47
inline constexpr uint64_t kFeatMultiDev = 1ull << 0;       // several devices per socket, SELECT_DEVICE
inline constexpr uint64_t kFeatPostedWrites = 1ull << 1;   // BAR_WRITE_POSTED
inline constexpr uint64_t kFeatRegMirror = 1ull << 2;     // MIRROR_SETUP, reads from shared memory
inline constexpr uint64_t kSupportedFeatures = kFeatMultiDev | kFeatPostedWrites | kFeatRegMirror;

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

struct SyncSysmem {
    uint64_t gpa[kMaxFdsOnWire];
    uint64_t size[kMaxFdsOnWire];
    int64_t offset[kMaxFdsOnWire];
};
static_assert(sizeof(SyncSysmem) == kMaxPayload);
static_assert(offsetof(SyncSysmem, size) == 64);
static_assert(offsetof(SyncSysmem, offset) == 128);

}  // namespace mpq::proto
