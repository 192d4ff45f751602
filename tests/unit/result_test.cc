#include "util/result.h"

#include <gtest/gtest.h>

namespace mpq {
namespace {

Result<int> half(int v) {
    if (v % 2) return fail("{} is odd", v);
    return v / 2;
}

Status chain(int v) {
    MPQ_TRY(half(v));
    return {};
}

TEST(Result, CarriesValueOrError) {
    auto ok = half(8);
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(*ok, 4);
    auto bad = half(3);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().message, "3 is odd");
}

TEST(Result, TryPropagates) {
    EXPECT_TRUE(chain(2).ok());
    auto s = chain(5);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().message, "5 is odd");
}

}  // namespace
}  // namespace mpq
