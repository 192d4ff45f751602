// Hostile guests at random: SCRIPTS programs of random (but mostly
// well-formed) instructions, random host register writes, two targets. The
// controller must never crash or hang, and must always end up serving
// registers and obeying a chip reset.
#include <map>
#include <random>

#include <fmt/format.h>

#include "lsi_test_util.h"

namespace lsitest {
namespace {

constexpr uint32_t P = 0x10000;
constexpr unsigned kWords = 128;

class Random : public LsiBench {
protected:
    std::mt19937 rng{12345};
    uint32_t r32() { return rng(); }
    unsigned pick(unsigned n) { return rng() % n; }

    uint32_t addr() {
        switch (pick(10)) {
        case 0: case 1: return P + 8 * pick(kWords / 2);      // into the program
        case 2: case 3: case 4: case 5: return 0x20000 + pick(0x10000);  // data area
        case 6: return kMmioBase + pick(0x400);               // own registers
        case 7: return kRamBarBase + pick(0x2000);            // own SCRIPTS RAM
        case 8: return 0xfff00000 + pick(0x100000);           // nothing there
        default: return r32();
        }
    }
    uint32_t count() {
        switch (pick(4)) {
        case 0: return pick(4);
        case 1: return pick(64);
        case 2: return pick(0x10000);
        default: return 0xffffff;
        }
    }
    uint32_t insn() {
        uint32_t phase = pick(8);
        switch (pick(10)) {
        case 0: return (pick(4) << 28) | (phase << 24) | count();       // block moves, all modes
        case 1: return 0x40000000u | (pick(8) << 27) | (pick(2) << 26) | (pick(2) << 25) | (pick(2) << 24) |
                       (pick(8) << 16) | (r32() & 0x648);                 // I/O
        case 2: return 0x68000000u | (pick(3) << 27) | (pick(8) << 24) | (r32() & 0x00ffffff);  // RMW
        case 3: return 0x80000000u | (pick(8) << 27) | (r32() & 0x07ffffff);  // transfer control
        case 4: return 0xc0000000u | count();                                  // memory move
        case 5: return 0xe0000000u | (r32() & 0x13ff0007);                     // LOAD/STORE
        case 6: return 0;
        default: return r32();
        }
    }
};

TEST_F(Random, ProgramsNeverCrashOrHang) {
    auto async = std::make_unique<FakeDisk>(loop, Timing::Async);
    auto sync = std::make_unique<FakeDisk>(loop, Timing::Sync);
    ASSERT_TRUE(lsi->bus().attach(0, async.get()));
    ASSERT_TRUE(lsi->bus().attach(1, sync.get()));
    std::map<std::string, int> outcomes;
    for (int prog_no = 0; prog_no < 300; prog_no++) {
        for (unsigned i = 0; i < 0x1000; i++) ram[0x20000 + i] = static_cast<uint8_t>(r32());
        for (unsigned i = 0; i < kWords; i += 2) {
            uint32_t in = insn();
            put32(P + i * 4, in);
            put32(P + i * 4 + 4, addr());
        }
        // Most programs start like a real command: SELECT, messages, CDB.
        if (pick(4) != 0) {
            static const uint8_t cdbs[][10] = {{0x00}, {0x12, 0, 0, 0, 36}, {0x03, 0, 0, 0, 32},
                                               {0x28, 0, 0, 0, 0, 8, 0, 0, 4}, {0x2a, 0, 0, 0, 0, 9, 0, 0, 2},
                                               {0x35}, {0xa3, 0x0c}};
            const uint8_t* c = cdbs[pick(7)];
            std::memcpy(&ram[0x21000], c, 10);
            uint8_t msgs[] = {static_cast<uint8_t>(0xc0 | pick(2)), 0x20, static_cast<uint8_t>(pick(256)), 0x01,
                              0x03, 0x01, 0x0a, 0x1f};
            std::memcpy(&ram[0x21100], msgs, sizeof(msgs));
            uint32_t pre[] = {select_atn(pick(3)), P + 8 * pick(kWords / 2), move(kMO, 1 + pick(8)), 0x21100,
                              move(kCMD, 6 + pick(5)), 0x21000};
            for (unsigned i = 0; i < 6; i++) put32(P + i * 4, pre[i]);
        }
        // Hostile host register writes in between.
        for (int k = 0; k < 4; k++) {
            uint8_t off = static_cast<uint8_t>(pick(256));
            if (off == L::kIstat0 || off == L::kScntl1 || off == L::kDspLast || off == L::kDcntl) continue;
            wb(off, static_cast<uint8_t>(r32()));
        }
        wl(L::kDsa, 0x20000 + pick(0x8000));
        run(pick(4) ? P : P + 8 * pick(kWords / 2));
        for (int round = 0; round < 20 && !stopped(); round++) {
            async->pump();
            loop.run_once(0);
            if (round == 10) wb(L::kIstat0, L::kIstatSigp);
        }
        if (!stopped()) outcomes["running"]++;
        else outcomes[fmt::format("dstat {:02x} sist {:04x}", rb(L::kDstat), rw(L::kSist0))]++;
        // Always alive: registers answer, a reset stops everything.
        wl(L::kScratchA, 0xa5a5a5a5);
        ASSERT_EQ(rl(L::kScratchA), 0xa5a5a5a5u) << "program " << prog_no;
        if (pick(2)) {
            wb(L::kScntl1, L::kScntl1Rst);
            wb(L::kScntl1, 0);
        }
        wb(L::kIstat0, L::kIstatSrst);
        wb(L::kIstat0, 0);
        ASSERT_TRUE(stopped()) << "program " << prog_no;
        lsi->config_write(0x04, 0x0007, 2);
        async->pump();
        loop.run_once(0);
        ASSERT_TRUE(stopped()) << "program " << prog_no;
    }
    for (auto& [k, v] : outcomes) std::printf("  %-28s %d\n", k.c_str(), v);
    // And still a working controller: a TEST UNIT READY on the sync disk.
    ram[0x30000] = 0x80;
    std::memset(&ram[0x30100], 0, 6);
    prog(P, {select_atn(1), 0, move(kMO, 1), 0x30000, move(kCMD, 6), 0x30100, move(kST, 1), 0x30200,
             move(kMI, 1), 0x30300, kClearAck, 0, kWaitDisc, 0, kInt, 0x600d});
    ram[0x30200] = 0xff;
    run(P);
    EXPECT_EQ(rl(L::kDsps), 0x600du);
    EXPECT_EQ(ram[0x30200], 0);
    lsi.reset();  // before the disks go
}

}  // namespace
}  // namespace lsitest
