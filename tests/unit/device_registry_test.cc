// The device registry and device set: one parser for -device and -drive,
// types with typed properties, devices created and removed at run time.
#include "devices/device_set.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "hw/edu.h"
#include "mem/guest_memory.h"
#include "util/event_loop.h"
#include "util/manual_work_queue.h"

using namespace mpq;
using namespace mpq::devices;

namespace {

opts::KeyValues kv(std::string_view text) {
    auto r = opts::parse_keyvalues(text, "driver");
    EXPECT_TRUE(r.ok());
    return *r;
}

struct Plugs : DevicePlugs {
    std::vector<std::string> log;
    bool refuse = false;
    Status plug(DeviceEntry& e) override {
        if (refuse) return fail("no slot");
        log.push_back("plug " + e.id);
        return {};
    }
    void unplug(DeviceEntry& e) override { log.push_back("unplug " + e.id); }
};

struct Img {
    std::string path;
    Img() {
        char t[] = "/tmp/mpq-reg-XXXXXX";
        int fd = ::mkstemp(t);
        EXPECT_EQ(::ftruncate(fd, 1 << 20), 0);
        ::close(fd);
        path = t;
    }
    ~Img() { ::unlink(path.c_str()); }
};

std::string err(const Result<DeviceConfig>& r) { return r.ok() ? "ok" : r.error().message; }

}  // namespace

TEST(DeviceRegistry, TypesAndProperties) {
    ASSERT_NE(find_device_type("lsi53c895a"), nullptr);
    EXPECT_EQ(find_device_type("lsi"), find_device_type("lsi53c895a"));
    EXPECT_EQ(find_device_type("edu")->kind, DeviceKind::PciFunction);
    EXPECT_EQ(find_device_type("lsi53c895a")->scsi_bus, ScsiBusProvider::Yes);
    EXPECT_EQ(find_device_type("scsi-hd")->kind, DeviceKind::ScsiDevice);
    EXPECT_EQ(find_device_type("nosuch"), nullptr);
    for (const DeviceType* t : device_types()) EXPECT_NE(device_help().find(t->name), std::string::npos);

    auto c = parse_device(kv("edu,id=e0,addr=4.1"));
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->id, "e0");
    EXPECT_EQ(c->props.uint("dma_mask"), hw::kEduDefaultDmaMask);  // the default
    EXPECT_FALSE(c->props.given("dma_mask"));
    EXPECT_EQ(c->props.devfn("addr"), (4 << 3) | 1);
    c = parse_device(kv("edu,dma_mask=0xffffffff,dma_mask=0xff"));
    EXPECT_EQ(c->props.uint("dma_mask"), 0xffu);  // the last one wins

    EXPECT_EQ(err(parse_device(kv("nosuch"))), "'nosuch' is not a valid device model name");
    EXPECT_EQ(err(parse_device(kv("edu,foo=1"))), "Property 'edu.foo' not found");
    EXPECT_EQ(err(parse_device(kv("lsi53c895a,addr=zz"))), "Property 'lsi53c895a.addr' doesn't take value 'zz'");
    EXPECT_NE(err(parse_device(kv("edu,dma_mask=lots"))), "ok");
    EXPECT_NE(err(parse_device(kv("edu,multifunction=maybe"))), "ok");
    EXPECT_NE(err(parse_device(kv("edu,id=9x"))), "ok");
    EXPECT_NE(err(parse_device(kv("scsi-hd,drive=d0,lun=x"))), "ok");
}

TEST(DeviceRegistry, DriveParser) {
    EXPECT_TRUE(parse_drive(kv("id=d0,file=/x,format=raw,if=none")).ok());
    auto e = [](std::string_view t) {
        auto r = parse_drive(kv(t));
        return r.ok() ? std::string("ok") : r.error().message;
    };
    EXPECT_EQ(e("id=d0,if=none"), "A block device must be specified for \"file\"");
    EXPECT_EQ(e("id=d0,file=/x,foo=1"), "Block format 'raw' does not support the option 'foo'");
    EXPECT_EQ(e("id=d0,file=/x,if=ide"), "if=ide is not supported here (use if=none)");
    EXPECT_EQ(e("file=/x"), "drive needs an id (id=ID)");
}

TEST(DeviceSet, BuildsPlugsAndRemovesAtRunTime) {
    Img img;
    EventLoop loop;
    ManualWorkQueue timers;
    GuestMemory mem;
    Plugs plugs;
    {
        DeviceSet set(loop, &mem, timers, plugs);
        ASSERT_TRUE(set.add_drive(kv("id=d0,file=" + img.path + ",format=raw,if=none")).ok());
        ASSERT_TRUE(set.add_drive(kv("id=d1,file=" + img.path + ",format=raw,if=none")).ok());
        EXPECT_FALSE(set.add_drive(kv("id=d0,file=" + img.path + ",if=none")).ok());
        auto hd = set.add(kv("scsi-hd,drive=d0"));
        ASSERT_FALSE(hd.ok());
        EXPECT_EQ(hd.error().message, "No 'SCSI' bus found for device 'scsi-hd'");
        auto lsi = set.add(kv("lsi53c895a,id=lsi0"));
        ASSERT_TRUE(lsi.ok());
        ASSERT_NE((*lsi)->scsi_bus, nullptr);
        auto edu = set.add(kv("edu"));
        ASSERT_TRUE(edu.ok());
        EXPECT_EQ((*edu)->id, "edu.1");  // unnamed: generated
        EXPECT_FALSE((*edu)->named);
        EXPECT_EQ((*edu)->pci->config_read(0, 4), 0x11e81234u);
        EXPECT_EQ(set.add(kv("edu,id=lsi0")).error().message, "Duplicate ID 'lsi0' for device");

        hd = set.add(kv("scsi-hd,id=sd0,drive=d0,scsi-id=2"));
        ASSERT_TRUE(hd.ok());
        EXPECT_EQ((*hd)->parent, "lsi0");
        EXPECT_EQ((*lsi)->scsi_bus->target(2), (*hd)->scsi.get());
        EXPECT_EQ(set.find_drive("d0")->attached_to, "sd0");
        EXPECT_EQ(set.add(kv("scsi-hd,drive=d0")).error().message,
                  "Property 'scsi-hd.drive' can't take value 'd0', it's in use");
        EXPECT_EQ(set.add(kv("scsi-hd,drive=d1,scsi-id=2")).error().message,
                  "SCSI id 2 is already in use on bus 'lsi0.0'");
        EXPECT_EQ(set.add(kv("scsi-hd,drive=d1,bus=edu.1.0")).error().message, "Bus 'edu.1.0' not found");
        EXPECT_EQ(set.add(kv("scsi-hd,drive=d1,scsi-id=8")).error().message, "bad scsi device id: 8");
        EXPECT_EQ(set.add(kv("scsi-hd,drive=nod")).error().message,
                  "Property 'scsi-hd.drive' can't find value 'nod'");
        EXPECT_FALSE(set.remove_drive("d0").ok());  // in use

        // Hot-unplug of a disk frees its target and its drive; a new disk
        // takes both again.
        ASSERT_TRUE(set.remove("sd0").ok());
        EXPECT_EQ((*lsi)->scsi_bus->target(2), nullptr);
        EXPECT_EQ(set.find_drive("d0")->attached_to, "");
        auto hd2 = set.add(kv("scsi-hd,id=sd1,drive=d0,bus=lsi0.0"));
        ASSERT_TRUE(hd2.ok());
        EXPECT_EQ((*hd2)->scsi_id, 0u);
        EXPECT_FALSE(set.remove("nosuch").ok());
        // Removing the controller takes its disks with it.
        ASSERT_TRUE(set.remove("lsi0").ok());
        EXPECT_EQ(set.find("sd1"), nullptr);
        EXPECT_TRUE(set.remove_drive("d0").ok());
        plugs.refuse = true;
        EXPECT_EQ(set.add(kv("edu,id=e9")).error().message, "no slot");
        EXPECT_EQ(set.find("e9"), nullptr);
    }
    EXPECT_EQ(plugs.log, (std::vector<std::string>{"plug lsi0", "plug edu.1", "unplug lsi0", "unplug edu.1"}));
}

// An unnamed function's generated id never takes one in use, whether a user
// chose it or a removal made the count of functions point at it; removing
// one device removes that device only.
TEST(DeviceSet, GeneratedIdsStayUnique) {
    EventLoop loop;
    ManualWorkQueue timers;
    GuestMemory mem;
    Plugs plugs;
    DeviceSet set(loop, &mem, timers, plugs);
    ASSERT_TRUE(set.add(kv("edu,id=edu.0")).ok());
    auto a = set.add(kv("edu"));  // the count (1) is free
    ASSERT_TRUE(a.ok());
    EXPECT_EQ((*a)->id, "edu.1");
    ASSERT_TRUE(set.add(kv("edu,id=edu.2")).ok());
    ASSERT_TRUE(set.remove("edu.0").ok());
    auto b = set.add(kv("edu"));  // the count (2) names the user's edu.2
    ASSERT_TRUE(b.ok());
    EXPECT_EQ((*b)->id, "edu.3");
    ASSERT_TRUE(set.remove("edu.2").ok());
    EXPECT_NE(set.find("edu.1"), nullptr);
    EXPECT_NE(set.find("edu.3"), nullptr);
    EXPECT_EQ(set.find("edu.2"), nullptr);
    EXPECT_EQ(set.find(""), nullptr);
}
