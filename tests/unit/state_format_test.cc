// The saved device-state format (state/device_state.h): round trip of every
// field, and refusal, with a clear message, of damaged, foreign, truncated,
// inconsistent and newer blobs.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>

#include "state/codec.h"
#include "state/device_state.h"

namespace mpq::state {
namespace {

DeviceStateImage sample() {
    DeviceStateImage img;
    img.producer = "qemu-scsi-dev test";
    img.drives.push_back({"d0", "raw", 4 << 20, false});
    DiskImage d;
    d.id = "sd0";
    d.controller = "lsi0";
    d.drive = "d0";
    d.scsi_id = 2;
    d.hd.unit_attention = true;
    d.hd.sense = scsi::kLbaOutOfRange;
    d.hd.write_cache = scsi::WriteCache::Off;
    d.hd.capacity_bytes = 4 << 20;
    img.disks.push_back(d);
    FunctionImage f;
    f.id = "lsi0";
    f.driver = "lsi53c895a";
    for (unsigned i = 0; i < f.config.bytes.size(); i++) f.config.bytes[i] = static_cast<uint8_t>(i * 5);
    f.config.irq_level = true;
    f.lsi.chip.regs.dsp = 0x12345678;
    f.lsi.chip.regs.dbc = 0xabcdef;
    f.lsi.chip.regs.scratch_cr[15] = 0xdeadbeef;
    f.lsi.chip.regs.istat1 = 1;
    f.lsi.chip.scripts.wait = hw::LsiWait::Data;
    f.lsi.chip.scripts.move_addr = 0xff00001234ull;
    f.lsi.chip.scripts.msg_len = 3;
    f.lsi.chip.scripts.msg = {0x80, 0x20, 0x05};
    f.lsi.chip.ram[8191] = 0x42;
    hw::LsiRequestState done;
    done.target = 2;
    done.completed = true;
    done.status = 2;
    done.tagged = true;
    done.tag = 4;
    hw::LsiRequestState live;
    live.target = 2;
    live.tagged = true;
    live.tag = 5;
    live.avail = 4;
    live.off = 1;
    scsi::RequestSnapshot t;
    t.tag = 5;
    t.cdb = {0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0};
    t.cdb_len = 10;
    t.dir = scsi::DataDir::FromDevice;
    t.expected = 512;
    t.moved = 4;
    t.chunk = {1, 2, 3, 4};
    live.target_req = t;
    f.lsi.reqs = {done, live};
    f.lsi.current = 1;
    img.functions.push_back(f);
    return img;
}

// Rewrites the header's checksum so a test reaches the checks behind it.
void reseal(std::vector<uint8_t>& b) {
    uint64_t len = b.size() - kHeaderSize;
    for (int i = 0; i < 8; i++) b[16 + i] = static_cast<uint8_t>(len >> (8 * i));
    uint32_t c = static_cast<uint32_t>(
        ::crc32(::crc32(0, nullptr, 0), b.data() + kHeaderSize, static_cast<uInt>(len)));
    for (int i = 0; i < 4; i++) b[24 + i] = static_cast<uint8_t>(c >> (8 * i));
}

std::string error_of(const std::vector<uint8_t>& b) {
    auto r = decode(b);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message;
}

TEST(StateFormat, RoundTripKeepsEveryField) {
    DeviceStateImage img = sample();
    std::vector<uint8_t> blob = encode(img);
    ASSERT_EQ(std::memcmp(blob.data(), "MPQSTATE", 8), 0);
    auto r = decode(blob);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->producer, img.producer);
    ASSERT_EQ(r->drives.size(), 1u);
    EXPECT_EQ(r->drives[0].length, 4u << 20);
    ASSERT_EQ(r->disks.size(), 1u);
    EXPECT_EQ(r->disks[0].scsi_id, 2);
    EXPECT_TRUE(r->disks[0].hd.unit_attention);
    EXPECT_EQ(r->disks[0].hd.sense.asc, 0x21);
    EXPECT_EQ(r->disks[0].hd.write_cache, scsi::WriteCache::Off);
    ASSERT_EQ(r->functions.size(), 1u);
    const FunctionImage& f = r->functions[0];
    EXPECT_EQ(f.config.bytes, img.functions[0].config.bytes);
    EXPECT_TRUE(f.config.irq_level);
    EXPECT_EQ(std::memcmp(&f.lsi.chip.regs, &img.functions[0].lsi.chip.regs, sizeof f.lsi.chip.regs), 0);
    EXPECT_EQ(f.lsi.chip.scripts.wait, hw::LsiWait::Data);
    EXPECT_EQ(f.lsi.chip.scripts.move_addr, 0xff00001234ull);
    EXPECT_EQ(f.lsi.chip.ram, img.functions[0].lsi.chip.ram);
    ASSERT_EQ(f.lsi.reqs.size(), 2u);
    EXPECT_TRUE(f.lsi.reqs[0].completed);
    EXPECT_FALSE(f.lsi.reqs[0].target_req);
    ASSERT_TRUE(f.lsi.reqs[1].target_req);
    EXPECT_EQ(f.lsi.reqs[1].target_req->chunk, (std::vector<uint8_t>{1, 2, 3, 4}));
    EXPECT_EQ(f.lsi.reqs[1].off, 1u);
    EXPECT_EQ(f.lsi.current, 1);
    // Same bytes again: the encoding is a function of the state.
    EXPECT_EQ(encode(*r), blob);
}

TEST(StateFormat, RefusesDamagedAndForeignBlobs) {
    std::vector<uint8_t> good = encode(sample());
    EXPECT_NE(error_of({}).find("too short"), std::string::npos);
    auto b = good;
    b[0] = 'X';
    EXPECT_NE(error_of(b).find("bad magic"), std::string::npos);
    b = good;
    b[8] = 3;  // format version 3
    EXPECT_NE(error_of(b).find("format version 3"), std::string::npos);
    b = good;
    b[good.size() - 20] ^= 1;
    EXPECT_NE(error_of(b).find("checksum"), std::string::npos);
    b = good;
    b.resize(b.size() - 1);
    EXPECT_NE(error_of(b).find("payload length"), std::string::npos);
    b = good;
    b[12] = 2;
    EXPECT_NE(error_of(b).find("flags"), std::string::npos);
    // A file must carry its checksum: the flag of a worker's publish is
    // refused where a file is read.
    b = good;
    b[12] = 1;
    EXPECT_NE(error_of(b).find("without a checksum"), std::string::npos);
    // Every truncation is refused, never read past.
    for (size_t n = 0; n < good.size(); n += 97) {
        b.assign(good.begin(), good.begin() + static_cast<long>(n));
        if (n >= kHeaderSize) reseal(b);
        EXPECT_FALSE(decode(b).ok()) << n;
    }
}

// A worker's per-round publish skips the CRC; only a reader that expects a
// publish takes it, and the flag cannot hide a checksum that is present.
TEST(StateFormat, PublishWithoutChecksum) {
    std::vector<uint8_t> blob = encode(sample(), Checksum::Omit);
    EXPECT_EQ(blob[12], kFlagNoChecksum);
    EXPECT_EQ(blob[24] | blob[25] | blob[26] | blob[27], 0);
    auto r = decode(blob, ChecksumPolicy::MayBeOmitted);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(encode(*r), encode(sample()));
    EXPECT_NE(error_of(blob).find("without a checksum"), std::string::npos);
    auto b = blob;
    b[24] = 1;
    auto bad = decode(b, ChecksumPolicy::MayBeOmitted);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("flagged as unchecked"), std::string::npos);
    // A checksummed blob is still checked under the lenient policy.
    b = encode(sample());
    b[b.size() - 20] ^= 1;
    bad = decode(b, ChecksumPolicy::MayBeOmitted);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("checksum mismatch"), std::string::npos);
}

// Sections are found by walking the payload.
size_t section_at(const std::vector<uint8_t>& b, const char (&t)[5]) {
    size_t p = kHeaderSize;
    while (p + 12 <= b.size()) {
        if (std::memcmp(&b[p], t, 4) == 0) return p;
        uint32_t len = b[p + 8] | b[p + 9] << 8 | b[p + 10] << 16 | uint32_t(b[p + 11]) << 24;
        p += 12 + len;
    }
    return 0;
}

TEST(StateFormat, RefusesUnknownVersionsAndSections) {
    std::vector<uint8_t> good = encode(sample());
    auto b = good;
    size_t at = section_at(b, "PCIF");
    ASSERT_NE(at, 0u);
    b[at + 4] = 2;  // PCIF version 2
    reseal(b);
    EXPECT_NE(error_of(b).find("section PCIF has version 2"), std::string::npos) << error_of(b);
    b = good;
    at = section_at(b, "CONN");
    ASSERT_NE(at, 0u);
    b[at + 4] = 1;  // a connection state this build does not know
    reseal(b);
    EXPECT_NE(error_of(b).find("CONN has version 1"), std::string::npos) << error_of(b);
    b = good;
    at = section_at(b, "DRIV");
    std::memcpy(&b[at], "ZZZZ", 4);
    reseal(b);
    EXPECT_NE(error_of(b).find("unknown section ZZZZ"), std::string::npos) << error_of(b);
    b = good;
    at = section_at(b, "END ");
    b.resize(at);  // no END
    reseal(b);
    EXPECT_NE(error_of(b).find("no END"), std::string::npos) << error_of(b);
}

TEST(StateFormat, RefusesOutOfRangeFieldsAndBrokenReferences) {
    auto refused = [](DeviceStateImage img, const char* needle) {
        std::string e = error_of(encode(img));
        EXPECT_NE(e.find(needle), std::string::npos) << "wanted '" << needle << "', got: " << e;
    };
    auto img = sample();
    img.functions[0].lsi.chip.regs.dbc = 0x1000000;
    refused(img, "dbc");
    img = sample();
    img.functions[0].lsi.chip.scripts.msg_len = 9;
    refused(img, "message length");
    img = sample();
    img.functions[0].lsi.chip.scripts.wait = static_cast<hw::LsiWait>(7);
    refused(img, "scripts wait");
    img = sample();
    img.functions[0].lsi.chip.scripts.move_addr = 1ull << 40;
    refused(img, "move address");
    img = sample();
    img.functions[0].lsi.current = 2;
    refused(img, "connected request");
    img = sample();
    img.functions[0].lsi.reqs[1].target_req->moved = 1000;
    refused(img, "moved more bytes");
    img = sample();
    img.functions[0].lsi.reqs[1].target_req->cdb_len = 17;
    refused(img, "cdb length");
    img = sample();
    img.functions[0].lsi.reqs[1].target_req->chunk.assign(200000, 0);
    refused(img, "request chunk");
    img = sample();
    img.functions[0].lsi.reqs[1].target = 5;
    refused(img, "no disk is saved");
    img = sample();
    img.disks[0].controller = "lsi9";
    refused(img, "not in the state");
    img = sample();
    img.disks[0].drive = "d9";
    refused(img, "not in the state");
    img = sample();
    img.disks[0].hd.block_size = 1000;
    refused(img, "block size");
    img = sample();
    img.functions[0].driver = "e1000";
    refused(img, "unknown driver");
    img = sample();
    img.drives.push_back(img.drives[0]);
    refused(img, "appears twice");
    img = sample();
    img.drives[0].id = std::string("d\x01", 2);
    refused(img, "printable");
}

TEST(StateCodec, ReaderStopsAtTheFirstError) {
    std::vector<uint8_t> b = {1, 2, 3};
    Reader r(b, "here");
    EXPECT_EQ(r.u16("a"), 0x0201);
    EXPECT_EQ(r.u32("b"), 0u);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.u8("c"), 0);  // nothing more once bad
    auto st = r.status();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("here: b: truncated"), std::string::npos) << st.error().message;
}

}  // namespace
}  // namespace mpq::state
