#include "util/options.h"

#include <gtest/gtest.h>

using namespace mpq;
using namespace mpq::opts;

namespace {
constexpr std::string_view kAll[] = {"device", "drive", "object", "machine", "monitor", "qmp",
                                     "chardev", "mon", "name", "display", "nographic",
                                     "nodefaults", "D", "d", "sandbox", "run-with", "S", "m",
                                     "accel", "qtest", "qtest-log"};

Result<CommandLine> parse(std::vector<const char*> v, std::span<const std::string_view> acc = kAll) {
    return parse_command_line(v, acc);
}
}  // namespace

TEST(Options, DeviceImpliedDriverAndKeys) {
    auto kv = parse_keyvalues("lsi53c895a,id=lsi0,addr=0x5", "driver");
    ASSERT_TRUE(kv.ok());
    ASSERT_EQ(kv->items.size(), 3u);
    EXPECT_EQ(kv->get("driver"), "lsi53c895a");
    EXPECT_EQ(kv->get("id"), "lsi0");
    EXPECT_EQ(kv->get("addr"), "0x5");
    EXPECT_FALSE(kv->has("bus"));
    EXPECT_EQ(kv->get("bus", "dflt"), "dflt");
}

TEST(Options, CommaEscaping) {
    auto kv = parse_keyvalues("raw,file=/tmp/a,,b.img,id=d0", "format");
    ASSERT_TRUE(kv.ok());
    EXPECT_EQ(kv->get("file"), "/tmp/a,b.img");
    EXPECT_EQ(kv->get("id"), "d0");
    // A leading escaped comma belongs to the implied value, as in QEMU.
    auto k2 = parse_keyvalues("lsi53c895a,,id=a", "driver");
    ASSERT_TRUE(k2.ok());
    EXPECT_EQ(k2->get("driver"), "lsi53c895a,id=a");
    EXPECT_EQ(k2->items.size(), 1u);
    auto k3 = parse_keyvalues("file=x,,,,y", "");
    ASSERT_TRUE(k3.ok());
    EXPECT_EQ(k3->get("file"), "x,,y");
}

TEST(Options, BareWordsAndNoPrefix) {
    auto kv = parse_keyvalues("socket,id=c0,path=/tmp/s,server,nowait", "backend");
    ASSERT_TRUE(kv.ok());
    EXPECT_EQ(kv->get("backend"), "socket");
    EXPECT_EQ(kv->get("server"), "on");
    EXPECT_EQ(kv->get("wait"), "off");
    // Without an implied key the first bare word is a flag too.
    auto d = parse_keyvalues("readonly,id=x", "");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->get("readonly"), "on");
}

TEST(Options, LastDuplicateWinsAndEmptyValues) {
    auto kv = parse_keyvalues("id=a,id=b,serial=", "");
    ASSERT_TRUE(kv.ok());
    EXPECT_EQ(kv->get("id"), "b");
    EXPECT_EQ(kv->items.size(), 3u);
    ASSERT_TRUE(kv->has("serial"));
    EXPECT_EQ(kv->get("serial", "x"), "");
    auto t = parse_keyvalues("id=a,", "");  // trailing comma ignored
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->items.size(), 1u);
}

TEST(Options, InvalidParameters) {
    auto e = parse_keyvalues("lsi,=3", "driver");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().message, "Invalid parameter ''");
}

TEST(Options, CommandLineOrderAndPositional) {
    auto cl = parse({"4", "-device", "lsi53c895a,id=lsi0", "-drive", "id=d0,file=x,format=raw,if=none",
                     "--device", "scsi-hd,drive=d0,bus=lsi0.0", "-nodefaults", "-D", "/tmp/log",
                     "-display", "none", "-machine", "x-remote", "-S", "-m", "256M"});
    ASSERT_TRUE(cl.ok()) << cl.error().message;
    EXPECT_EQ(cl->positional, (std::vector<std::string>{"4"}));
    auto devs = cl->all("device");
    ASSERT_EQ(devs.size(), 2u);
    EXPECT_EQ(devs[0]->kv.get("driver"), "lsi53c895a");
    EXPECT_EQ(devs[1]->kv.get("driver"), "scsi-hd");
    EXPECT_EQ(devs[1]->where(), "-device scsi-hd,drive=d0,bus=lsi0.0");
    EXPECT_TRUE(cl->has("nodefaults"));
    EXPECT_EQ(cl->last("nodefaults")->where(), "-nodefaults");
    EXPECT_EQ(cl->last("D")->text, "/tmp/log");
    EXPECT_EQ(cl->last("display")->kv.get("type"), "none");
    EXPECT_EQ(cl->last("machine")->kv.get("type"), "x-remote");
    EXPECT_EQ(cl->last("m")->kv.get("size"), "256M");
    EXPECT_FALSE(cl->has("qmp"));
}

TEST(Options, UnknownAndUnacceptedOptions) {
    auto a = parse({"-foo"});
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.error().message, "-foo: invalid option");
    constexpr std::string_view only_dev[] = {"device"};
    auto b = parse({"-kernel", "bzImage"}, only_dev);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().message, "-kernel: invalid option");
    auto c = parse({"--foo"});
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().message, "--foo: invalid option");
}

TEST(Options, MissingArgument) {
    auto a = parse({"-device"});
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.error().message, "-device: requires an argument");
    auto b = parse({"-nodefaults", "-D"});
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().message, "-D: requires an argument");
}

TEST(Options, KeyValueErrorsNameTheOption) {
    auto a = parse({"-device", "lsi,=1"});
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.error().message, "-device lsi,=1: Invalid parameter ''");
    auto b = parse({"-device", "{\"driver\":\"lsi53c895a\"}"});
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.error().message.find("-device {"), std::string::npos);
}

TEST(Options, OptionErrorPrefix) {
    auto cl = parse({"-device", "lsi53c895a,foo=1"});
    ASSERT_TRUE(cl.ok());
    const Option* o = cl->last("device");
    constexpr std::string_view known[] = {"driver", "id", "addr"};
    auto s = check_known_keys(o->kv, "lsi53c895a", known);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(o->error(s.error()).message, "-device lsi53c895a,foo=1: Property 'lsi53c895a.foo' not found");
    EXPECT_EQ(o->error("bad {}", 1).message, "-device lsi53c895a,foo=1: bad 1");
}

TEST(Options, ParseUint) {
    EXPECT_EQ(*parse_uint("0", "x"), 0u);
    EXPECT_EQ(*parse_uint("42", "x"), 42u);
    EXPECT_EQ(*parse_uint("0x1f", "x"), 31u);
    EXPECT_EQ(*parse_uint("18446744073709551615", "x"), UINT64_MAX);
    EXPECT_FALSE(parse_uint("18446744073709551616", "x").ok());
    EXPECT_FALSE(parse_uint("", "x").ok());
    EXPECT_FALSE(parse_uint("-1", "x").ok());
    EXPECT_FALSE(parse_uint("0x", "x").ok());
    EXPECT_FALSE(parse_uint("12a", "x").ok());
    auto e = parse_uint("abc", "scsi-id");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().message, "Parameter 'scsi-id' expects integer");
    EXPECT_FALSE(parse_uint("8", "scsi-id", 7).ok());
    EXPECT_TRUE(parse_uint("7", "scsi-id", 7).ok());
}

TEST(Options, ParseSize) {
    EXPECT_EQ(*parse_size("512", "size"), 512u);
    EXPECT_EQ(*parse_size("4k", "size"), 4096u);
    EXPECT_EQ(*parse_size("256M", "size"), 256ull << 20);
    EXPECT_EQ(*parse_size("2G", "size"), 2ull << 30);
    EXPECT_EQ(*parse_size("256", "size", 1ull << 20), 256ull << 20);
    EXPECT_EQ(*parse_size("15E", "size"), 15ull << 60);
    EXPECT_FALSE(parse_size("16E", "size").ok());
    EXPECT_EQ(*parse_size("7b", "size"), 7u);
}

TEST(Options, ParseSizeErrors) {
    auto e = parse_size("12Q", "size");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().message, "Parameter 'size' expects a non-negative number below 2^64");
    EXPECT_FALSE(parse_size("", "size").ok());
    EXPECT_FALSE(parse_size("M", "size").ok());
    EXPECT_FALSE(parse_size("1MB", "size").ok());
    EXPECT_FALSE(parse_size("99999999999999999999", "size").ok());
    EXPECT_FALSE(parse_size("17179869184G", "size").ok());
}

TEST(Options, ParseBoolAndId) {
    EXPECT_TRUE(*parse_bool("on", "x"));
    EXPECT_FALSE(*parse_bool("off", "x"));
    EXPECT_TRUE(*parse_bool("yes", "x"));
    EXPECT_FALSE(parse_bool("maybe", "x").ok());
    EXPECT_TRUE(check_id("lsi0").ok());
    EXPECT_TRUE(check_id("a-b.c_d").ok());
    EXPECT_FALSE(check_id("0lsi").ok());
    EXPECT_FALSE(check_id("").ok());
    EXPECT_FALSE(check_id("a,b").ok());
    EXPECT_EQ(check_id("a b").error().message, "Parameter 'id' expects an identifier");
}

TEST(Options, TableHasEveryNeededOption) {
    for (auto n : kAll) EXPECT_NE(find_option(n), nullptr) << n;
    EXPECT_EQ(find_option("device")->implied_key, "driver");
    EXPECT_EQ(find_option("object")->implied_key, "qom-type");
    EXPECT_EQ(find_option("machine")->implied_key, "type");
    EXPECT_EQ(find_option("chardev")->implied_key, "backend");
    EXPECT_EQ(find_option("nodefaults")->kind, ArgKind::None);
}
