// QEMU's blkdebug error injection, the subset that matters for fault tests:
// a rules file in QEMU's -readconfig syntax
//
//   [inject-error]            [set-state]
//   event = "write_aio"       event = "write_aio"
//   errno = "5"               state = "1"
//   sector = "2048"           new_state = "2"
//   once = "on"
//   state = "2"
//   iotype = "write"
//
// reachable from `-drive file=blkdebug:RULES:IMAGE` and
// `-drive driver=blkdebug,config=RULES,image.filename=IMAGE`. The engine is
// QEMU's model: an event activates the inject-error rules registered for it
// in the current state; every later request that overlaps an active rule's
// sector (any request when it has none) and has one of its I/O types fails
// with its errno until another event activates a different set; `once`
// rules fire a single time; set-state rules move the state machine.
//
// Which events a request raises depends on where blkdebug sits, as in QEMU:
// - under a format (`file=blkdebug:...`, format=raw|qcow2): the format
//   raises read_aio / write_aio before each read / write it sends down;
// - as the top node (`driver=blkdebug`): no format raises them, so only the
//   generic block layer's events happen;
// - both: a write raises pwritev (pwritev_zero for write-zeroes) before and
//   pwritev_done after it, a flush raises flush_to_os then flush_to_disk.
// Differences from QEMU, on purpose: under qcow2, every write of the image
// (metadata too) counts as write_aio (QEMU raises l2_update and friends for
// metadata, which we do not know); `immediately=on` is accepted and fails the
// request the same way (no separate AIOCB path here); no breakpoints.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::block {

enum class BlkdebugEvent : uint8_t {
    ReadAio, WriteAio, FlushToOs, FlushToDisk, Pwritev, PwritevZero, PwritevDone
};
enum class BlkdebugPosition : uint8_t { UnderFormat, Top };
// QEMU's BlkdebugIOType (the request kinds a rule applies to).
enum class BlkdebugIo : uint8_t { Read, Write, WriteZeroes, Discard, Flush };

struct BlkdebugRule {
    enum class Action : uint8_t { InjectError, SetState };
    enum class Once : uint8_t { No, Yes };
    Action action = Action::InjectError;
    BlkdebugEvent event = BlkdebugEvent::ReadAio;
    uint64_t state = 0;  // 0 = in any state
    // inject-error
    int err = 5;                 // EIO, QEMU's default
    int64_t offset = -1;         // byte offset (sector * 512); -1 = every request
    uint32_t io_mask = 0;        // bit per BlkdebugIo
    Once once = Once::No;
    // set-state
    uint64_t new_state = 0;
};

// Parses a rules file's text; `origin` names it in error messages.
Result<std::vector<BlkdebugRule>> parse_blkdebug_config(std::string_view text,
                                                        std::string_view origin);
Result<std::vector<BlkdebugRule>> read_blkdebug_config(const std::string& path);

// The rule engine. Thread-safe: block requests run on several I/O threads.
class BlkdebugRules {
public:
    BlkdebugRules(std::vector<BlkdebugRule> rules, BlkdebugPosition pos);
    // Raises the events a request of kind `io` brings with it, then decides:
    // 0 = let it run, else the errno to fail it with. Atomic per request.
    int on_request(BlkdebugIo io, uint64_t off, uint64_t len);
    // The events after a request ran (or was failed): pwritev_done.
    void after_request(BlkdebugIo io);
    uint64_t state() const;
    uint64_t injected() const;

private:
    void raise(BlkdebugEvent ev);

    mutable std::mutex mu_;
    BlkdebugPosition pos_;
    std::vector<BlkdebugRule> rules_;  // config order
    std::vector<bool> gone_;           // per rule: a `once` rule that fired
    std::vector<size_t> active_;       // indices into rules_, first match wins
    uint64_t state_ = 1;               // QEMU starts in state 1
    uint64_t injected_ = 0;
};

}  // namespace mpq::block
