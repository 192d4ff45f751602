// QEMU's blkdebug subset: the rules-file syntax, the event/active-rule
// engine, the two -drive spellings, and an opened drive whose writes fail
// with the configured errno while the image keeps exactly what succeeded.
#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>

#include "block/blkdebug.h"
#include "block/block.h"
#include "block_testutil.h"

using namespace mpq;
using namespace mpq::block;
using mpq::testutil::TempImage;

namespace {

std::vector<BlkdebugRule> parse_ok(std::string_view text) {
    auto r = parse_blkdebug_config(text, "test.conf");
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : std::vector<BlkdebugRule>{};
}

std::string parse_err(std::string_view text) {
    auto r = parse_blkdebug_config(text, "test.conf");
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : r.error().message;
}

TEST(BlkdebugConfig, ParsesQemuSyntax) {
    auto rules = parse_ok(
        "# comment\n"
        "[inject-error]\n"
        "event = \"write_aio\"\n"
        "errno = \"28\"\n"
        "sector = \"0x10\"\n"
        "once = \"on\"\n"
        "iotype = \"write\"\n"
        "\n"
        "[set-state \"s1\"]\n"
        "  event = \"flush_to_disk\"\n"
        "  state = \"1\"\n"
        "  new_state = \"2\"\n");
    ASSERT_EQ(rules.size(), 2u);
    EXPECT_EQ(rules[0].action, BlkdebugRule::Action::InjectError);
    EXPECT_EQ(rules[0].event, BlkdebugEvent::WriteAio);
    EXPECT_EQ(rules[0].err, ENOSPC);
    EXPECT_EQ(rules[0].offset, 16 * 512);
    EXPECT_EQ(rules[0].once, BlkdebugRule::Once::Yes);
    EXPECT_EQ(rules[0].io_mask, 1u << static_cast<unsigned>(BlkdebugIo::Write));
    EXPECT_EQ(rules[1].action, BlkdebugRule::Action::SetState);
    EXPECT_EQ(rules[1].event, BlkdebugEvent::FlushToDisk);
    EXPECT_EQ(rules[1].state, 1u);
    EXPECT_EQ(rules[1].new_state, 2u);
}

TEST(BlkdebugConfig, TrailingCommentsAreAllowedOtherTextIsNot) {
    auto rules = parse_ok("[inject-error]\nevent = \"write_aio\"   # the data writes\n");
    ASSERT_EQ(rules.size(), 1u);
    EXPECT_EQ(rules[0].event, BlkdebugEvent::WriteAio);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"write_aio\" x\n").find("parse error"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"write_aio\n").find("parse error"),
              std::string::npos);
}

TEST(BlkdebugConfig, DefaultsAreQemus) {
    auto rules = parse_ok("[inject-error]\nevent = \"read_aio\"\n");
    ASSERT_EQ(rules.size(), 1u);
    EXPECT_EQ(rules[0].err, EIO);
    EXPECT_EQ(rules[0].offset, -1);
    EXPECT_EQ(rules[0].once, BlkdebugRule::Once::No);
    EXPECT_EQ(rules[0].state, 0u);
}

TEST(BlkdebugConfig, RejectsBadInput) {
    EXPECT_NE(parse_err("event = \"read_aio\"\n").find("no group"), std::string::npos);
    EXPECT_NE(parse_err("[bogus]\n").find("no option group 'bogus'"), std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = read_aio\n").find("parse error"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nerrno = \"5\"\n").find("Missing event"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"l2_update\"\n").find("not supported"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"read_aio\"\nnew_state = \"2\"\n")
                  .find("Invalid parameter 'new_state'"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"read_aio\"\nerrno = \"5x\"\n")
                  .find("expects a number"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"read_aio\"\nsector = \"99999999999999999999\"\n")
                  .find("out of range"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error]\nevent = \"read_aio\"\nonce = \"maybe\"\n")
                  .find("'on' or 'off'"),
              std::string::npos);
    EXPECT_NE(parse_err("[inject-error\n").find("parse error"), std::string::npos);
    // The line number is in the message.
    EXPECT_NE(parse_err("\n\n[inject-error]\nevent = \"x\"\n").find("test.conf:3"),
              std::string::npos);
}

BlkdebugRules under_format(std::string_view text) {
    return BlkdebugRules(parse_ok(text), BlkdebugPosition::UnderFormat);
}

constexpr BlkdebugIo R = BlkdebugIo::Read, W = BlkdebugIo::Write, F = BlkdebugIo::Flush;

TEST(BlkdebugRules, WriteRuleFiresFromTheFirstWriteOn) {
    BlkdebugRules e(under_format("[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n"));
    EXPECT_EQ(e.on_request(R, 0, 512), 0) << "no write_aio yet: nothing active";
    EXPECT_EQ(e.on_request(W, 0, 512), EIO);
    EXPECT_EQ(e.on_request(W, 4096, 512), EIO);
    // QEMU's model: the rule stays active for every I/O type it names (all).
    EXPECT_EQ(e.on_request(R, 0, 512), EIO);
    EXPECT_EQ(e.on_request(F, 0, 0), EIO);
    EXPECT_EQ(e.injected(), 4u);
}

TEST(BlkdebugRules, IotypeNarrowsTheRule) {
    BlkdebugRules e(under_format("[inject-error]\nevent = \"write_aio\"\niotype = \"write\"\n"));
    EXPECT_EQ(e.on_request(W, 0, 512), EIO);
    EXPECT_EQ(e.on_request(R, 0, 512), 0);
    EXPECT_EQ(e.on_request(F, 0, 0), 0);
}

TEST(BlkdebugRules, SectorMatchesOverlappingRequestsOnly) {
    BlkdebugRules e(under_format("[inject-error]\nevent = \"write_aio\"\nsector = \"8\"\n"));
    EXPECT_EQ(e.on_request(W, 0, 4096), 0) << "sectors 0..7";
    EXPECT_EQ(e.on_request(W, 4096, 512), EIO) << "sector 8";
    EXPECT_EQ(e.on_request(W, 2048, 4096), EIO) << "sectors 4..11";
    EXPECT_EQ(e.on_request(W, 4608, 512), 0) << "sector 9";
    EXPECT_EQ(e.on_request(F, 0, 0), 0) << "a flush covers no sector";
}

TEST(BlkdebugRules, OnceFiresASingleTime) {
    BlkdebugRules e(under_format("[inject-error]\nevent = \"write_aio\"\nonce = \"on\"\n"));
    EXPECT_EQ(e.on_request(W, 0, 512), EIO);
    EXPECT_EQ(e.on_request(W, 0, 512), 0);
    EXPECT_EQ(e.on_request(W, 0, 512), 0);
    EXPECT_EQ(e.injected(), 1u);
}

TEST(BlkdebugRules, StateMachineMatchesTheSecondWrite) {
    // The example of QEMU's docs/devel/blkdebug: fail the 2nd write_aio only.
    BlkdebugRules e(under_format("[set-state]\nevent = \"write_aio\"\nstate = \"1\"\nnew_state = \"2\"\n"
                             "[inject-error]\nevent = \"write_aio\"\nstate = \"2\"\nerrno = \"5\"\n"
                             "once = \"on\"\n"));
    EXPECT_EQ(e.state(), 1u);
    EXPECT_EQ(e.on_request(W, 0, 512), 0);
    EXPECT_EQ(e.state(), 2u);
    EXPECT_EQ(e.on_request(W, 0, 512), EIO);
    EXPECT_EQ(e.on_request(W, 0, 512), 0);
}

TEST(BlkdebugRules, FlushToDiskRule) {
    BlkdebugRules e(under_format("[inject-error]\nevent = \"flush_to_disk\"\niotype = \"flush\"\n"
                             "errno = \"28\"\n"));
    EXPECT_EQ(e.on_request(W, 0, 512), 0);
    EXPECT_EQ(e.on_request(F, 0, 0), ENOSPC);
}

TEST(BlkdebugRules, TopNodeSeesNoFormatEvents) {
    // driver=blkdebug: nothing above raises write_aio, so such a rule never
    // fires (as in QEMU); the generic pwritev event does.
    BlkdebugRules top(parse_ok("[inject-error]\nevent = \"write_aio\"\n"), BlkdebugPosition::Top);
    EXPECT_EQ(top.on_request(W, 0, 512), 0);
    EXPECT_EQ(top.on_request(R, 0, 512), 0);
    BlkdebugRules pw(parse_ok("[inject-error]\nevent = \"pwritev\"\nonce = \"on\"\n"),
                     BlkdebugPosition::Top);
    EXPECT_EQ(pw.on_request(R, 0, 512), 0);
    EXPECT_EQ(pw.on_request(W, 0, 512), EIO);
    EXPECT_EQ(pw.on_request(W, 0, 512), 0);
}

TEST(BlkdebugRules, PwritevDoneMovesTheStateAfterTheWrite) {
    BlkdebugRules e(under_format(
        "[set-state]\nevent = \"pwritev_done\"\nstate = \"1\"\nnew_state = \"2\"\n"
        "[inject-error]\nevent = \"read_aio\"\nstate = \"2\"\niotype = \"read\"\n"));
    EXPECT_EQ(e.on_request(R, 0, 512), 0);
    EXPECT_EQ(e.on_request(W, 0, 512), 0);
    EXPECT_EQ(e.state(), 1u);
    e.after_request(W);
    EXPECT_EQ(e.state(), 2u);
    EXPECT_EQ(e.on_request(R, 0, 512), EIO);
}

TEST(BlkdebugRules, ErrnoZeroLetsTheRequestThrough) {
    BlkdebugRules e(under_format("[inject-error]\nevent = \"read_aio\"\nerrno = \"0\"\n"));
    EXPECT_EQ(e.on_request(R, 0, 512), 0);
    EXPECT_EQ(e.injected(), 0u);
}

Result<DriveOptions> parse(std::vector<std::pair<std::string, std::string>> kv) {
    return parse_drive_options(kv);
}

TEST(BlkdebugDrive, LegacyFilenameSyntax) {
    auto o = parse({{"id", "d0"}, {"file", "blkdebug:/tmp/r.conf:/tmp/disk.img"}, {"format", "raw"}});
    ASSERT_TRUE(o.ok()) << o.error().message;
    EXPECT_EQ(o->blkdebug, Blkdebug::UnderFormat);
    EXPECT_EQ(o->blkdebug_config, "/tmp/r.conf");
    EXPECT_EQ(o->file, "/tmp/disk.img");
    EXPECT_EQ(o->format, "raw");

    auto no_rules = parse({{"id", "d0"}, {"file", "blkdebug::/tmp/disk.img"}});
    ASSERT_TRUE(no_rules.ok());
    EXPECT_EQ(no_rules->blkdebug_config, "");
    EXPECT_EQ(no_rules->file, "/tmp/disk.img");

    auto bad = parse({{"id", "d0"}, {"file", "blkdebug:/tmp/disk.img"}});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("both config file and image path"), std::string::npos);
}

TEST(BlkdebugDrive, DriverSyntax) {
    auto o = parse({{"id", "d0"}, {"driver", "blkdebug"}, {"config", "/tmp/r.conf"},
                    {"image.filename", "/tmp/disk.img"}, {"image.driver", "file"}});
    ASSERT_TRUE(o.ok()) << o.error().message;
    EXPECT_EQ(o->blkdebug, Blkdebug::Top);
    EXPECT_EQ(o->blkdebug_config, "/tmp/r.conf");
    EXPECT_EQ(o->file, "/tmp/disk.img");
    EXPECT_EQ(o->format, "raw");

    EXPECT_FALSE(parse({{"id", "d0"}, {"file", "/tmp/x"}, {"config", "/tmp/r.conf"}}).ok())
        << "config= without driver=blkdebug";
    EXPECT_FALSE(parse({{"id", "d0"}, {"driver", "blkdebug"}, {"image.filename", "/a"},
                        {"image.driver", "nbd"}})
                     .ok());
    auto plain = parse({{"id", "d0"}, {"file", "/tmp/x"}});
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(plain->blkdebug, Blkdebug::Off);
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path);
    f << text;
}

TEST(BlkdebugDrive, OpenedDriveFailsWritesAndKeepsWhatSucceeded) {
    TempImage img(1 << 20);
    std::string conf = img.path() + ".conf";
    // Writes fail from the 3rd one on (states 1 -> 2 -> 3), reads keep working.
    write_file(conf,
               "[set-state]\nevent = \"write_aio\"\nstate = \"1\"\nnew_state = \"2\"\n"
               "[set-state]\nevent = \"write_aio\"\nstate = \"2\"\nnew_state = \"3\"\n"
               "[inject-error]\nevent = \"write_aio\"\nstate = \"3\"\niotype = \"write\"\n");
    auto o = parse({{"id", "d0"}, {"file", "blkdebug:" + conf + ":" + img.path()},
                    {"format", "raw"}});
    ASSERT_TRUE(o.ok()) << o.error().message;
    auto drv = open_drive(*o);
    ASSERT_TRUE(drv.ok()) << drv.error().message;
    auto a = testutil::pattern(4096, 1), b = testutil::pattern(4096, 2),
         c = testutil::pattern(4096, 3);
    EXPECT_TRUE((*drv)->pwrite(0, a).ok());
    EXPECT_TRUE((*drv)->pwrite(8192, b).ok());
    auto st = (*drv)->pwrite(16384, c);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EIO);
    EXPECT_FALSE((*drv)->pwrite(0, c).ok()) << "the rule stays active";
    std::vector<uint8_t> back(4096);
    EXPECT_TRUE((*drv)->pread(8192, back).ok());
    EXPECT_EQ(back, b);
    EXPECT_TRUE((*drv)->flush().ok());
    EXPECT_EQ(img.read(0, 4096), a);
    EXPECT_EQ(img.read(8192, 4096), b);
    EXPECT_EQ(img.read(16384, 4096), std::vector<uint8_t>(4096, 0));
    ::unlink(conf.c_str());
}

TEST(BlkdebugDrive, MissingOrBadConfigFailsTheOpen) {
    TempImage img(65536);
    auto o = parse({{"id", "d0"}, {"file", "blkdebug:/nonexistent/r.conf:" + img.path()}});
    ASSERT_TRUE(o.ok());
    auto drv = open_drive(*o);
    ASSERT_FALSE(drv.ok());
    EXPECT_NE(drv.error().message.find("Could not read blkdebug config"), std::string::npos);

    std::string conf = img.path() + ".conf";
    write_file(conf, "[inject-error]\nevent = \"nope\"\n");
    auto o2 = parse({{"id", "d0"}, {"file", "blkdebug:" + conf + ":" + img.path()}});
    ASSERT_TRUE(o2.ok());
    auto drv2 = open_drive(*o2);
    ASSERT_FALSE(drv2.ok());
    EXPECT_NE(drv2.error().message.find("not supported"), std::string::npos);
    ::unlink(conf.c_str());
}

}  // namespace
