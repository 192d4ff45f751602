// The SCSI bus between a host bus adapter (the LSI controller) and its
// targets (scsi-hd). A request lives as a shared_ptr: the HBA holds it while
// it is queued or connected, the target while its block I/O is in flight, so
// a cancel from either side never leaves a dangling reference.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "util/result.h"

namespace mpq::scsi {

inline constexpr int kMaxTargets = 8;  // ids 0..7 (7 is usually the HBA)
inline constexpr size_t kMaxCdb = 16;

enum class Status : uint8_t {
    Good = 0x00,
    CheckCondition = 0x02,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskAborted = 0x40,
};

// Fixed-format sense triplet.
struct Sense {
    uint8_t key = 0, asc = 0, ascq = 0;
};

inline constexpr Sense kNoSense{0x00, 0x00, 0x00};
inline constexpr Sense kLbaOutOfRange{0x05, 0x21, 0x00};
inline constexpr Sense kInvalidOpcode{0x05, 0x20, 0x00};
inline constexpr Sense kInvalidField{0x05, 0x24, 0x00};
inline constexpr Sense kInvalidParamList{0x05, 0x26, 0x00};
inline constexpr Sense kLunNotSupported{0x05, 0x25, 0x00};
inline constexpr Sense kWriteProtected{0x07, 0x27, 0x00};
inline constexpr Sense kReadError{0x03, 0x11, 0x00};   // MEDIUM ERROR, unrecovered read
inline constexpr Sense kWriteError{0x03, 0x0c, 0x00};  // MEDIUM ERROR, write error
inline constexpr Sense kSpaceExhausted{0x07, 0x27, 0x07};
inline constexpr Sense kResetOccurred{0x06, 0x29, 0x00};  // UNIT ATTENTION power on/reset
inline constexpr Sense kCapacityChanged{0x06, 0x2a, 0x09};  // UNIT ATTENTION capacity data has changed
inline constexpr Sense kCommandAborted{0x0b, 0x00, 0x06};
inline constexpr Sense kReportedLunsChanged{0x06, 0x3f, 0x0e};  // UNIT ATTENTION reported luns data has changed

enum class DataDir : uint8_t { None, FromDevice, ToDevice };

class Request;

// Implemented by the HBA. Called on the event loop thread.
class RequestClient {
public:
    virtual ~RequestClient() = default;
    // `len` bytes are ready in req.buffer() (FromDevice), or req.buffer() has
    // room for `len` bytes the HBA must fill (ToDevice). The HBA calls
    // req.continue_transfer() once it has consumed / filled them.
    virtual void transfer_data(Request& req, uint32_t len) = 0;
    // The command finished. `residual` = bytes of the expected transfer not moved.
    virtual void command_complete(Request& req, Status status, uint32_t residual) = 0;
};

class Request : public std::enable_shared_from_this<Request> {
public:
    virtual ~Request() = default;
    uint32_t tag() const { return tag_; }
    unsigned lun() const { return lun_; }
    // Starts the command. Returns the data direction and the expected length
    // (from the CDB). Completion or the first transfer_data() may happen
    // before start() returns (emulated commands, and the first chunk of a
    // WRITE) or later (READ data, flushes); *expected_len and dir() are set
    // before any callback. A command that failed or finished without data
    // inside start() returns DataDir::None. Only one start() per request.
    virtual DataDir start(uint32_t* expected_len) = 0;
    // Direction of the data phase, valid from the first callback on.
    DataDir dir() const { return dir_; }
    // The chunk announced by transfer_data() is done; go on. Ignored when no
    // chunk is outstanding (a confused HBA cannot break the request).
    virtual void continue_transfer() = 0;
    virtual std::span<uint8_t> buffer() = 0;
    // Aborts: no callback reaches the client afterwards. Block I/O already
    // submitted still runs to its end; its result is dropped. Idempotent.
    virtual void cancel() = 0;
    // Sense of a CHECK CONDITION (valid after command_complete).
    virtual Sense sense() const = 0;

    void* hba_private = nullptr;

protected:
    Request(uint32_t tag, unsigned lun, RequestClient* client)
        : tag_(tag), lun_(lun), client_(client) {}
    uint32_t tag_;
    unsigned lun_;
    RequestClient* client_;
    DataDir dir_ = DataDir::None;
};

// A request in flight as plain data (saved device state): taken only
// while the device is quiesced (no block I/O in flight), when a live request
// is always waiting for its HBA to move the announced chunk.
struct RequestSnapshot {
    uint32_t tag = 0;
    unsigned lun = 0;
    std::array<uint8_t, kMaxCdb> cdb{};
    uint8_t cdb_len = 0;
    DataDir dir = DataDir::None;
    uint32_t expected = 0;       // transfer length from the CDB
    uint32_t moved = 0;          // bytes handed to / taken from the HBA (target's count)
    std::vector<uint8_t> chunk;  // the announced chunk (DATA IN: its data; DATA OUT: what the HBA filled)
    // Target-specific progress the CDB alone does not give.
    bool flush_after = false;    // a write completes only after a flush
    uint64_t io_off = 0, io_left = 0;  // WRITE SAME range
};

class Device {
public:
    virtual ~Device() = default;
    // cdb.size() may be shorter than the opcode needs: the device answers
    // CHECK CONDITION, never reads past it.
    virtual std::shared_ptr<Request> new_request(uint32_t tag, unsigned lun,
                                                 std::span<const uint8_t> cdb,
                                                 RequestClient* client) = 0;
    // Bus reset / device reset: cancels everything in flight, raises a unit attention.
    virtual void reset() = 0;
    virtual const std::string& id() const = 0;
    // The medium's size changed under the device (block_resize): a disk
    // raises CAPACITY DATA HAS CHANGED, unless a reset's unit attention is
    // already pending (it outranks it, as in QEMU).
    virtual void capacity_changed() {}
    // Saved state: a request of this device as data, and a request rebuilt
    // from such data (checked like any guest input) that carries on where
    // the saved one was. Devices that cannot do it say so.
    virtual Result<RequestSnapshot> save_request(const Request& req) const {
        (void)req;
        return Error{"device '" + id() + "' cannot save its requests", 0};
    }
    virtual Result<std::shared_ptr<Request>> restore_request(const RequestSnapshot& snap,
                                                             RequestClient* client) {
        (void)snap;
        (void)client;
        return Error{"device '" + id() + "' cannot restore requests", 0};
    }
    // Hot-unplug, after the device left the bus and its block I/O drained:
    // every request still open completes now with CHECK CONDITION `sense`
    // (the HBA delivers it; nothing is left waiting for a device that is gone).
    virtual void unplug(Sense sense) { (void)sense; }
    // Hot-plugged into a running machine: the first command reports
    // REPORTED LUNS DATA HAS CHANGED instead of the power-on unit attention,
    // as QEMU's scsi-hd on a bus that reports changes.
    virtual void hotplugged() {}
};

class Bus {
public:
    Device* target(unsigned id) const { return id < kMaxTargets ? targets_[id] : nullptr; }
    bool attach(unsigned id, Device* dev) {
        if (id >= kMaxTargets || targets_[id]) return false;
        targets_[id] = dev;
        return true;
    }
    // Hot-unplug: the id answers selection timeouts from now on.
    bool detach(unsigned id, Device* dev) {
        if (id >= kMaxTargets || targets_[id] != dev) return false;
        targets_[id] = nullptr;
        return true;
    }
    void reset() {
        for (auto* d : targets_)
            if (d) d->reset();
    }

private:
    std::array<Device*, kMaxTargets> targets_{};
};

}  // namespace mpq::scsi
