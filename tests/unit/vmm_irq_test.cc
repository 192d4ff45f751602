// INTx swizzle and PIRQ -> IRQ routing, line sharing and observer events.
#include <gtest/gtest.h>

#include "vmm/irq_router.h"

namespace mpq::vmm {
namespace {

struct Recorder {
    std::vector<std::pair<int, bool>> ev;
    void attach(IrqRouter& r) {
        r.set_observer([this](int l, bool v) { ev.emplace_back(l, v); });
    }
};

TEST(VmmIrq, SwizzleMatchesI440fx) {
    EXPECT_EQ(pirq_of(2, 0), 1);  // slot 2 INTA -> PIRQB
    EXPECT_EQ(pirq_of(3, 0), 2);
    EXPECT_EQ(pirq_of(4, 0), 3);
    EXPECT_EQ(pirq_of(5, 0), 0);
    EXPECT_EQ(pirq_of(2, 3), 0);  // INTD wraps
}

TEST(VmmIrq, DisabledRouteRaisesNothing) {
    IrqRouter r;
    Recorder rec;
    rec.attach(r);
    r.set_pirq_input(1, true);
    EXPECT_TRUE(rec.ev.empty());
    r.set_route(1, 11);
    ASSERT_EQ(rec.ev.size(), 1u);
    EXPECT_EQ(rec.ev[0], std::make_pair(11, true));
    EXPECT_TRUE(r.line_level(11));
    r.set_route(1, 0x80);
    EXPECT_EQ(rec.ev.back(), std::make_pair(11, false));
}

TEST(VmmIrq, SharedLineStaysUpUntilLastSourceDrops) {
    IrqRouter r;
    Recorder rec;
    rec.attach(r);
    for (int p = 0; p < 4; ++p) r.set_route(p, 11);
    r.set_pirq_input(0, true);
    r.set_pirq_input(2, true);
    r.set_pirq_input(0, false);
    EXPECT_TRUE(r.line_level(11));
    r.set_pirq_input(2, false);
    EXPECT_FALSE(r.line_level(11));
    ASSERT_EQ(rec.ev.size(), 2u);
    EXPECT_EQ(rec.ev[0], std::make_pair(11, true));
    EXPECT_EQ(rec.ev[1], std::make_pair(11, false));
}

TEST(VmmIrq, RerouteMovesAssertedLine) {
    IrqRouter r;
    Recorder rec;
    rec.attach(r);
    r.set_route(1, 10);
    r.set_pirq_input(1, true);
    r.set_route(1, 5);
    ASSERT_EQ(rec.ev.size(), 3u);
    EXPECT_EQ(rec.ev[1], std::make_pair(5, true));
    EXPECT_EQ(rec.ev[2], std::make_pair(10, false));
    r.set_route(1, 16);  // >= 16: disabled
    EXPECT_FALSE(r.line_level(5));
}

TEST(VmmIrq, SpuriousLowerDoesNotUnderflow) {
    IrqRouter r;
    r.set_route(0, 9);
    r.set_pirq_input(0, false);
    r.set_pirq_input(0, true);
    EXPECT_TRUE(r.line_level(9));
    r.set_pirq_input(7, true);  // bad index ignored
    EXPECT_FALSE(r.line_level(-1));
    EXPECT_FALSE(r.line_level(24));
}

}  // namespace
}  // namespace mpq::vmm
