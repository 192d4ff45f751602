// LSI53C895A SCSI flows: full commands through SCRIPTS into a fake disk,
// disconnect/reselect with tags, phase mismatch, messages, aborts, resets.
#include "hw/lsi_impl.h"
#include "lsi_test_util.h"

namespace lsitest {
namespace {

constexpr uint32_t P = 0x10000;       // program
constexpr uint32_t kMsgOut = 0x20000;
constexpr uint32_t kCdb = 0x20100;
constexpr uint32_t kStatus = 0x20200;
constexpr uint32_t kMsgIn = 0x20300;
constexpr uint32_t kTable = 0x20400;  // DSA
constexpr uint32_t kBuf = 0x30000;
constexpr uint32_t kPm = 0x18000;      // phase-mismatch handler

class Scsi : public LsiBench {
protected:
    // Program builder.
    std::vector<uint32_t> code;
    uint32_t here() const { return P + static_cast<uint32_t>(code.size()) * 4; }
    void emit(uint32_t a, uint32_t b) {
        code.push_back(a);
        code.push_back(b);
    }
    void load_program(uint32_t at = P) {
        for (size_t i = 0; i < code.size(); i++) put32(at + i * 4, code[i]);
    }
    void set_cdb(std::initializer_list<uint8_t> c) {
        size_t i = 0;
        for (uint8_t b : c) ram[kCdb + i++] = b;
    }
    void read10(uint32_t lba, uint16_t blocks) {
        set_cdb({0x28, 0, uint8_t(lba >> 24), uint8_t(lba >> 16), uint8_t(lba >> 8), uint8_t(lba), 0,
                 uint8_t(blocks >> 8), uint8_t(blocks), 0});
    }
    // SELECT + IDENTIFY (+ tag) + CDB.
    void emit_issue(unsigned msg_len, unsigned cdb_len, uint32_t msgout = kMsgOut, uint32_t cdb = kCdb) {
        emit(select_atn(0), P + 0xf00);
        emit(move(kMO, msg_len), msgout);
        emit(move(kCMD, cdb_len), cdb);
    }
    void emit_status_and_finish(uint32_t vector) {
        emit(move(kST, 1), kStatus);
        emit(move(kMI, 1), kMsgIn);
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
        emit(kInt, vector);
    }
    bool disk_matches(uint32_t addr, uint64_t lba, size_t len) {
        return std::memcmp(&ram[addr], &disk->data[lba * 512], len) == 0;
    }
};

TEST_F(Scsi, ReadSyncDirectMove) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0xc0;
    read10(3, 8);
    ram[kStatus] = 0xff;
    ram[kMsgIn] = 0xff;
    emit_issue(1, 10);
    emit(move(kDI, 4096), kBuf);
    emit_status_and_finish(0x600d);
    load_program();
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 0x600du);
    EXPECT_TRUE(disk_matches(kBuf, 3, 4096));
    EXPECT_EQ(ram[kStatus], 0);
    EXPECT_EQ(ram[kMsgIn], 0);
    EXPECT_EQ(rb(L::kSfbr), 0);
    EXPECT_EQ(rb(L::kSidl), 0);
    EXPECT_EQ(rb(L::kScntl1) & L::kScntl1Con, 0);
    EXPECT_EQ(disk->tags_seen.back(), hw::kLsiUntagged);
}

TEST_F(Scsi, SfbrTracksCommandAndStatus) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x00, 0, 0, 0, 0, 0});
    emit_issue(1, 6);
    emit(kInt, 1);  // stop after COMMAND: SFBR = CDB[0], phase STATUS
    load_program();
    run(P);
    EXPECT_EQ(rl(L::kDsps), 1u);
    EXPECT_EQ(rb(L::kSfbr), 0x00);
    EXPECT_EQ(rb(L::kSstat1) & 7, kST);
    EXPECT_EQ(rb(L::kSbdl), 0);
}

TEST_F(Scsi, InquiryTableIndirectAndIndirect) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x12, 0, 0, 0, 36, 0});
    wl(L::kDsa, kTable);
    put32(kTable + 0x10, 20);         // first 20 bytes, table indirect
    put32(kTable + 0x14, kBuf);
    put32(kTable + 0x20, kBuf + 20);  // the rest, indirect
    code.clear();
    put32(kTable + 0x00, 0x00000000);  // id 0 in byte 2 of the entry at DSA + 0
    emit(select_ti_atn(), P + 0xf00);
    emit(move(kMO, 1), kMsgOut);
    emit(move(kCMD, 6), kCdb);
    emit(move_ti(kDI), 0x10);
    emit(move_ind(kDI, 16), kTable + 0x20);
    emit_status_and_finish(2);
    load_program();
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 2u);
    EXPECT_EQ(std::memcmp(&ram[kBuf + 8], "QEMU    QEMU HARDDISK", 21), 0);
    EXPECT_EQ(ram[kBuf + 7], 0x12);
    EXPECT_EQ(ram[kStatus], 0);
}

// Indirect and table indirect both set: indirect wins and the count is the
// instruction's, as stock QEMU does it (a table entry that would move
// elsewhere, or a different length, is ignored).
TEST_F(Scsi, IndirectBitWinsOverTableIndirect) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x12, 0, 0, 0, 36, 0});
    wl(L::kDsa, kTable);
    put32(kTable + 0x10, 8);               // a table entry: 8 bytes to kBuf + 0x200
    put32(kTable + 0x14, kBuf + 0x200);
    put32(kTable + 0x20, kBuf);            // the indirect pointer
    emit_issue(1, 6);
    emit(move_ind(kDI, 36) | move_ti(kDI), kTable + 0x20);
    emit_status_and_finish(4);
    load_program();
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 4u);
    EXPECT_EQ(std::memcmp(&ram[kBuf + 8], "QEMU    QEMU HARDDISK", 21), 0);
    EXPECT_EQ(ram[kBuf + 0x200], 0);  // the table's address was not used
    EXPECT_EQ(ram[kStatus], 0);
}

TEST_F(Scsi, TableIndirect40BitAddress) {
    attach_disk(Timing::Sync);
    std::vector<uint8_t> high(0x10000, 0);
    const uint64_t high_gpa = 0x1200000000ull;  // bits 39:32 = 0x12
    ASSERT_TRUE(mem.set_host_region(high_gpa, high.data(), high.size()).ok());
    wb(L::kCcntl1, 0x06);
    ram[kMsgOut] = 0x80;
    read10(10, 2);
    wl(L::kDsa, kTable);
    put32(kTable + 0x10, (0x12u << 24) | 1024);
    put32(kTable + 0x14, 0x100);
    emit_issue(1, 10);
    emit(move_ti(kDI), 0x10);
    emit_status_and_finish(3);
    load_program();
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 3u);
    EXPECT_EQ(std::memcmp(&high[0x100], &disk->data[10 * 512], 1024), 0);
    // The low 4 GiB alias was not touched.
    EXPECT_EQ(ram[0x100], 0);
}

TEST_F(Scsi, WriteSync) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x2a, 0, 0, 0, 0, 20, 0, 0, 2, 0});
    for (int i = 0; i < 1024; i++) ram[kBuf + i] = static_cast<uint8_t>(0xa0 ^ i);
    emit_issue(1, 10);
    emit(move(kDO, 1024), kBuf);
    emit_status_and_finish(4);
    load_program();
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 4u);
    EXPECT_TRUE(disk_matches(kBuf, 20, 1024));
    EXPECT_EQ(ram[kStatus], 0);
}

TEST_F(Scsi, WriteWaitsForStatusAfterLastChunk) {
    // The target keeps the bus in DATA OUT until the write is done: the
    // move that used up the data stays suspended, and the SCRIPTS after it
    // see STATUS (Linux: datao_done tests WHEN STATUS).
    attach_disk(Timing::Async);
    ram[kMsgOut] = 0x80;
    set_cdb({0x2a, 0, 0, 0, 0, 30, 0, 0, 2, 0});
    for (int i = 0; i < 1024; i++) ram[kBuf + i] = static_cast<uint8_t>(0x5a ^ i);
    emit_issue(1, 10);
    emit(move(kDO, 1024), kBuf);
    emit(jump_if_phase(kST), P + 0x100);
    emit(kInt, 0xbad);
    load_program();
    code.clear();
    emit_status_and_finish(21);
    load_program(P + 0x100);
    run(P);
    EXPECT_FALSE(stopped());
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 0u);
    ASSERT_EQ(disk->pending.size(), 1u);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 21u);
    EXPECT_TRUE(disk_matches(kBuf, 30, 1024));
    EXPECT_EQ(ram[kStatus], 0);
}

TEST_F(Scsi, ReadAsyncDisconnectReselectTagged) {
    attach_disk(Timing::Async);
    ram[kMsgOut + 0] = 0xc0;
    ram[kMsgOut + 1] = 0x20;
    ram[kMsgOut + 2] = 5;
    read10(7, 4);
    wb(L::kDcntl, L::kDcntlCom);
    emit_issue(3, 10);
    emit(move(kMI, 2), kMsgIn);           // SAVE DP, DISCONNECT
    emit(kClearAck, 0);
    emit(kWaitDisc, 0);
    emit(kWaitResel, P + 0xf00);
    emit(move(kMI, 3), kMsgIn + 0x10);    // IDENTIFY, SIMPLE TAG, tag
    emit(move(kDI, 2048), kBuf);
    emit_status_and_finish(5);
    load_program();
    put32(P + 0xf00, kInt);
    put32(P + 0xf04, 0xbad);
    run(P);
    EXPECT_FALSE(stopped());  // waiting for reselection
    EXPECT_EQ(ram[kMsgIn], 0x02);
    EXPECT_EQ(ram[kMsgIn + 1], 0x04);
    EXPECT_EQ(rb(L::kDstat), 0x80);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 5u);
    EXPECT_EQ(ram[kMsgIn + 0x10], 0x80);
    EXPECT_EQ(ram[kMsgIn + 0x11], 0x20);
    EXPECT_EQ(ram[kMsgIn + 0x12], 5);
    EXPECT_EQ(rb(L::kSsid), 0x80);
    EXPECT_TRUE(disk_matches(kBuf, 7, 2048));
    EXPECT_EQ(disk->tags_seen.back(), 5u);
}

TEST_F(Scsi, TaggedQueueReselectsInCompletionOrder) {
    attach_disk(Timing::Async);
    wb(L::kDcntl, L::kDcntlCom);
    const uint8_t tags[3] = {1, 3, 5};
    const uint32_t lbas[3] = {30, 40, 50};
    for (int i = 0; i < 3; i++) {
        uint32_t mo = kMsgOut + i * 8, cdb = kCdb + i * 16;
        ram[mo] = 0xc0;
        ram[mo + 1] = 0x20;
        ram[mo + 2] = tags[i];
        uint8_t c[10] = {0x28, 0, 0, 0, 0, uint8_t(lbas[i]), 0, 0, 1, 0};
        std::memcpy(&ram[cdb], c, 10);
        emit_issue(3, 10, mo, cdb);
        emit(move(kMI, 2), kMsgIn);
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
    }
    for (int i = 0; i < 3; i++) {
        emit(kWaitResel, P + 0xf00);
        emit(move(kMI, 3), kMsgIn + 0x10);
        emit(store(L::kSidl, 1), kTable + i);  // log the tag
        emit(move(kDI, 512), kBuf + i * 512);
        emit(move(kST, 1), kStatus + i);
        emit(move(kMI, 1), kMsgIn);
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
    }
    emit(kInt, 6);
    load_program();
    run(P);
    EXPECT_FALSE(stopped());
    EXPECT_EQ(disk->requests.size(), 3u);
    // Complete them in reverse order, one at a time.
    ASSERT_EQ(disk->pending.size(), 3u);
    std::reverse(disk->pending.begin(), disk->pending.end());
    for (int round = 0; round < 100 && !stopped(); round++) {
        if (!disk->pending.empty()) {
            auto f = std::move(disk->pending.front());
            disk->pending.pop_front();
            f();
        }
        loop.run_once(0);
    }
    ASSERT_TRUE(stopped());
    EXPECT_EQ(rl(L::kDsps), 6u);
    for (int i = 0; i < 3; i++) {
        uint8_t tag = ram[kTable + i];
        int which = tag == 1 ? 0 : tag == 3 ? 1 : tag == 5 ? 2 : -1;
        ASSERT_GE(which, 0) << "slot " << i;
        EXPECT_EQ(which, 2 - i);
        EXPECT_TRUE(disk_matches(kBuf + i * 512, lbas[which], 512)) << "slot " << i;
        EXPECT_EQ(ram[kStatus + i], 0);
    }
}

TEST_F(Scsi, ShortTransferPhaseMismatchJump) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x03, 0, 0, 0, 32, 0});  // REQUEST SENSE, 18 bytes come back
    wb(L::kCcntl0, L::kCcntl0Enpmj);
    wl(L::kPmjad1, kPm);
    wl(L::kPmjad2, kPm + 0x100);
    emit_issue(1, 6);
    uint32_t move_at = here();
    emit(move(kDI, 32), kBuf);
    emit(kInt, 0xbad);
    load_program();
    code.clear();
    emit(store(L::kIa, 4), kTable + 0x40);  // as Linux pm_handle does first
    emit(store(L::kRbc, 4), kTable + 0x44);  // then PM0_SAVE: the rest of the entry
    emit(store(L::kUa, 4), kTable + 0x48);
    emit_status_and_finish(7);
    load_program(kPm);
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 7u);
    EXPECT_EQ(ram[kBuf], 0x70);
    EXPECT_EQ(get32(kTable + 0x44), 14u);        // bytes not moved
    EXPECT_EQ(get32(kTable + 0x48), kBuf + 18);  // next address
    EXPECT_EQ(get32(kTable + 0x40), move_at);
}

TEST_F(Scsi, ShortTransferMismatchInterrupt) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x03, 0, 0, 0, 32, 0});
    ww(L::kSien0, 0x008f);
    emit_issue(1, 6);
    emit(move(kDI, 32), kBuf);
    uint32_t after = here();
    emit_status_and_finish(8);
    load_program();
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_TRUE(irq.level);
    EXPECT_EQ(rw(L::kSist0) & L::kSist0Ma, L::kSist0Ma);
    EXPECT_EQ(rl(L::kDsp), after);
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 14u);
    EXPECT_EQ(rb(L::kDfifo), 14);
    EXPECT_EQ(rb(L::kCtest5) & 3, 0);
    EXPECT_EQ(rb(L::kSstat1) & 7, kST);
    run(after);  // the driver resumes at the status phase
    EXPECT_EQ(rl(L::kDsps), 8u);
}

TEST_F(Scsi, MismatchAtStartOfMove) {
    attach_disk(Timing::Sync);
    ram[kMsgOut] = 0x80;
    set_cdb({0x00, 0, 0, 0, 0, 0});
    wb(L::kCcntl0, L::kCcntl0Enpmj);  // still MA: the phase is wrong before any byte
    emit_issue(1, 6);
    emit(move(kDI, 512), kBuf);
    load_program();
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kSist0) & L::kSist0Ma, L::kSist0Ma);
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 512u);
}

TEST_F(Scsi, AsyncNoDataCommandHoldsPlaceholderDataIn) {
    attach_disk(Timing::Async);
    ram[kMsgOut] = 0x80;
    set_cdb({0x00, 0, 0, 0, 0, 0});
    wb(L::kCcntl0, L::kCcntl0Enpmj);
    wl(L::kPmjad1, kPm);
    emit_issue(1, 6);
    emit(move(kDI, 1), kBuf);  // Linux data_ovrun CHMOV
    emit(kInt, 0xbad);
    load_program();
    code.clear();
    emit_status_and_finish(9);
    load_program(kPm);
    run(P);
    EXPECT_FALSE(stopped());
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 9u);
    EXPECT_EQ(ram[kStatus], 0);
}

TEST_F(Scsi, NegotiationConsumedUnknownMessageRejected) {
    attach_disk(Timing::Sync);
    // IDENTIFY + SDTR: consumed, the target goes to COMMAND.
    uint8_t mo[] = {0xc0, 0x01, 0x03, 0x01, 0x0a, 0x1f};
    std::memcpy(&ram[kMsgOut], mo, sizeof(mo));
    emit(select_atn(0), P + 0xf00);
    emit(move(kMO, sizeof(mo)), kMsgOut);
    emit(jump_if_phase(kCMD), P + 0x100);
    emit(kInt, 0xbad);
    load_program();
    code.clear();
    // Unknown message 0x55: MESSAGE REJECT, then COMMAND.
    ram[kMsgOut + 0x10] = 0x55;
    emit(kSetAtn, 0);
    emit(move(kMO, 1), kMsgOut + 0x10);
    emit(move(kMI, 1), kMsgIn);
    emit(jump_if_phase(kCMD), P + 0x200);
    emit(kInt, 0xbad2);
    load_program(P + 0x100);
    put32(P + 0x200, kInt);
    put32(P + 0x204, 10);
    run(P);
    EXPECT_EQ(rl(L::kDsps), 10u);
    EXPECT_EQ(ram[kMsgIn], 0x07);
}

TEST_F(Scsi, AbortTagCancelsQueuedRequest) {
    attach_disk(Timing::Async);
    ram[kMsgOut] = 0xc0;
    ram[kMsgOut + 1] = 0x20;
    ram[kMsgOut + 2] = 9;
    // Abort: IDENTIFY, SIMPLE TAG 9, ABORT TAG, and a second ABORT TAG.
    uint8_t ab[] = {0x80, 0x20, 9, 0x0d, 0x0d};
    std::memcpy(&ram[kMsgOut + 0x10], ab, sizeof(ab));
    read10(1, 1);
    emit_issue(3, 10);
    emit(move(kMI, 2), kMsgIn);
    emit(kClearAck, 0);
    emit(kWaitDisc, 0);
    emit(select_atn(0), P + 0xf00);
    emit(move(kMO, sizeof(ab)), kMsgOut + 0x10);
    emit(kInt, 11);
    load_program();
    run(P);
    EXPECT_EQ(rl(L::kDsps), 11u);
    ASSERT_EQ(disk->requests.size(), 1u);
    EXPECT_TRUE(disk->requests[0]->cancelled);
    EXPECT_EQ(rb(L::kScntl1) & L::kScntl1Con, 0);
    disk->pump();  // the cancelled read delivers nothing
    loop.run_once(0);
    // The controller still serves a new command.
    code.clear();
    ram[kMsgOut + 0x20] = 0x80;
    set_cdb({0x00, 0, 0, 0, 0, 0});
    emit_issue(1, 6, kMsgOut + 0x20);
    emit_status_and_finish(12);
    load_program(P + 0x400);
    disk->timing = Timing::Sync;
    run(P + 0x400);
    EXPECT_EQ(rl(L::kDsps), 12u);
    EXPECT_EQ(ram[kStatus], 0);
}

TEST_F(Scsi, BusDeviceResetCancelsEverything) {
    attach_disk(Timing::Async);
    for (int i = 0; i < 2; i++) {
        uint32_t mo = kMsgOut + i * 8;
        ram[mo] = 0xc0;
        ram[mo + 1] = 0x20;
        ram[mo + 2] = static_cast<uint8_t>(2 * i + 1);
        read10(i, 1);
        emit_issue(3, 10, mo);
        emit(move(kMI, 2), kMsgIn);
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
    }
    ram[kMsgOut + 0x40] = 0x0c;
    ram[kMsgOut + 0x41] = 0x06;
    emit(select_atn(0), P + 0xf00);
    emit(move(kMO, 2), kMsgOut + 0x40);
    emit(kInt, 13);
    load_program();
    run(P);
    EXPECT_EQ(rl(L::kDsps), 13u);
    ASSERT_EQ(disk->requests.size(), 2u);
    EXPECT_TRUE(disk->requests[0]->cancelled);
    EXPECT_TRUE(disk->requests[1]->cancelled);
}

TEST_F(Scsi, ChipResetWithQueuedRequests) {
    attach_disk(Timing::Async);
    ram[kMsgOut] = 0xc0;
    ram[kMsgOut + 1] = 0x20;
    ram[kMsgOut + 2] = 1;
    read10(0, 1);
    emit_issue(3, 10);
    emit(move(kMI, 2), kMsgIn);
    emit(kClearAck, 0);
    emit(kWaitDisc, 0);
    emit(kWaitResel, P + 0xf00);
    load_program();
    run(P);
    EXPECT_FALSE(stopped());
    wb(L::kIstat0, L::kIstatSrst);
    wb(L::kIstat0, 0);
    EXPECT_TRUE(stopped());
    EXPECT_TRUE(disk->requests[0]->cancelled);
    EXPECT_EQ(disk->pump(), 1);  // the late completion finds nothing
    for (int i = 0; i < 3; i++) loop.run_once(0);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80);
}

TEST_F(Scsi, BusResetWhileDataMoveWaits) {
    attach_disk(Timing::Async);
    disk->chunk_limit = 512;
    ram[kMsgOut] = 0xc0;
    read10(0, 4);
    emit_issue(1, 10);
    emit(move(kMI, 2), kMsgIn);
    emit(kClearAck, 0);
    emit(kWaitDisc, 0);
    emit(kWaitResel, P + 0xf00);
    emit(move(kMI, 1), kMsgIn + 0x10);
    emit(move(kDI, 2048), kBuf);
    emit(kInt, 0xbad);
    load_program();
    run(P);
    disk->pump();            // first chunk arrives: reselection, 512 bytes moved
    loop.run_once(0);
    disk->pending.clear();   // the next chunk never comes
    EXPECT_FALSE(stopped());
    ww(L::kSien0, L::kSist0Rst);
    wb(L::kScntl1, L::kScntl1Rst);
    wb(L::kScntl1, 0);
    EXPECT_TRUE(stopped());
    EXPECT_TRUE(irq.level);
    EXPECT_TRUE(disk->requests[0]->cancelled);
    EXPECT_TRUE(disk_matches(kBuf, 0, 512));
}

TEST_F(Scsi, AbsurdCountsAreBounded) {
    attach_disk(Timing::Sync);
    // 16 MiB of IDENTIFY bytes, a 16 MiB CDB, a 16 MiB DATA IN for 512 bytes.
    std::memset(&ram[0x80000], 0x80, 0x10000);
    read10(0, 1);
    std::memcpy(&ram[0x90000], &ram[kCdb], 10);
    wb(L::kCcntl0, L::kCcntl0Enpmj);
    wl(L::kPmjad1, kPm);
    emit(select_atn(0), P + 0xf00);
    emit(move(kMO, 0xffffff), 0x80000);
    emit(move(kCMD, 0xffffff), 0x90000);
    emit(move(kDI, 0xffffff), kBuf);
    emit(kInt, 0xbad);
    load_program();
    code.clear();
    emit(store(L::kRbc, 4), kTable + 0x44);
    emit_status_and_finish(14);
    load_program(kPm);
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 14u);
    EXPECT_TRUE(disk_matches(kBuf, 0, 512));
    EXPECT_EQ(get32(kTable + 0x44), 0xffffffu - 512);
}

TEST_F(Scsi, TruncatedExtendedMessageStopsAtDbc) {
    attach_disk(Timing::Sync);
    uint8_t mo[] = {0xc0, 0x01, 0xff};  // extended, length 255, then nothing
    std::memcpy(&ram[kMsgOut], mo, sizeof(mo));
    emit(select_atn(0), P + 0xf00);
    emit(move(kMO, sizeof(mo)), kMsgOut);
    emit(kInt, 15);
    load_program();
    run(P);
    EXPECT_EQ(rl(L::kDsps), 15u);
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 0u);
}

TEST_F(Scsi, SelectWhileReselectedTakesAlternate) {
    attach_disk(Timing::Async);
    ram[kMsgOut] = 0xc0;
    read10(0, 1);
    emit_issue(1, 10);
    emit(move(kMI, 2), kMsgIn);
    emit(kClearAck, 0);
    emit(kWaitDisc, 0);
    emit(kInt, 0x55);
    load_program();
    code.clear();
    emit(kWaitDisc, 0);               // reselects at once: data is pending
    emit(select_atn(0), P + 0x300);   // connected: alternate
    emit(kInt, 0xbad);
    load_program(P + 0x200);
    put32(P + 0x300, kInt);
    put32(P + 0x304, 16);
    run(P);
    EXPECT_EQ(rl(L::kDsps), 0x55u);
    rb(L::kDstat);
    disk->pump();  // data ready while SCRIPTS are stopped: nothing runs
    loop.run_once(0);
    EXPECT_TRUE(stopped());
    run(P + 0x200);
    EXPECT_EQ(rl(L::kDsps), 16u);
    EXPECT_EQ(rb(L::kSsid), 0x80);
}

TEST_F(Scsi, TooManyOutstandingRequestsGetBusy) {
    attach_disk(Timing::Async);
    ram[kMsgOut] = 0xc0;
    ram[kMsgOut + 1] = 0x20;
    read10(0, 1);
    // One SELECT/CMD/disconnect round, looped by the host.
    emit_issue(3, 10);
    emit(move(kMI, 2), kMsgIn);
    emit(kClearAck, 0);
    emit(kWaitDisc, 0);
    emit(kInt, 17);
    load_program();
    int busy = 0;
    for (int i = 0; i < 300; i++) {
        ram[kMsgOut + 2] = static_cast<uint8_t>(i);
        ram[kMsgIn] = 0xee;
        run(P);
        if (rl(L::kDsps) != 17u) {
            // BUSY: phase STATUS instead of the MSG IN disconnect.
            EXPECT_EQ(rb(L::kSist0) & L::kSist0Ma, L::kSist0Ma);
            EXPECT_EQ(rb(L::kSstat1) & 7, kST);
            busy++;
            // Take the status and the COMMAND COMPLETE.
            code.clear();
            emit_status_and_finish(18);
            load_program(P + 0x800);
            run(P + 0x800);
            EXPECT_EQ(ram[kStatus], 0x08);
            break;
        }
        rb(L::kDstat);
    }
    EXPECT_EQ(busy, 1);
    EXPECT_EQ(disk->requests.size(), hw::kLsiMaxRequests);
}

}  // namespace
}  // namespace lsitest
