// RemoteProcess: what a command line builds (the object monitors attach to).
#include "remote/remote_process.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "proto/channel.h"
#include "remote/device_server.h"

using namespace mpq;

namespace {

constexpr std::string_view kAll[] = {"device", "drive", "object", "machine", "chardev", "mon",
                                     "monitor", "qmp", "name", "display", "nodefaults"};

struct Img {
    std::string path;
    Img() {
        char t[] = "/tmp/mpq-rp-XXXXXX";
        int fd = ::mkstemp(t);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::ftruncate(fd, 1 << 20), 0);
        ::close(fd);
        path = t;
    }
    ~Img() { ::unlink(path.c_str()); }
};

opts::CommandLine parse(std::vector<std::string> args) {
    std::vector<const char*> v;
    for (auto& a : args) v.push_back(a.c_str());
    auto cl = opts::parse_command_line(v, kAll);
    EXPECT_TRUE(cl.ok()) << cl.error().message;
    return std::move(*cl);
}

}  // namespace

TEST(RemoteProcess, BuildsControllersDisksAndBindings) {
    Img img;
    int sv[2], sw[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sw), 0);
    UniqueFd peer(sv[0]), peer2(sw[0]);
    EventLoop loop;
    remote::RemoteProcess proc(loop);
    auto cl = parse({"-name", "rp", "-device", "lsi53c895a,id=lsi0", "-device", "lsi53c895a,id=lsi1",
                     "-drive", "id=d0,file=" + img.path + ",format=raw,if=none",
                     "-drive", "id=d1,file=" + img.path + ",format=raw,if=none,readonly=on",
                     "-device", "scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=3",
                     "-device", "scsi-hd,id=sd1,drive=d1,bus=lsi1.0",
                     "-chardev", "socket,id=c0,path=/tmp/x,server=on,wait=off", "-mon", "chardev=c0",
                     "-qmp", "unix:/tmp/q,server,nowait",
                     "-object", "x-remote-object,id=o1,devid=lsi1,fd=" + std::to_string(sw[1])});
    auto s = proc.configure(cl, sv[1]);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(proc.name(), "rp");
    ASSERT_EQ(proc.functions().size(), 2u);
    ASSERT_NE(proc.find_function("lsi1"), nullptr);
    EXPECT_EQ(proc.find_function("lsi1")->dev->config_read(0, 4), 0x00121000u);
    EXPECT_EQ(proc.find_function("nope"), nullptr);
    ASSERT_EQ(proc.disks().size(), 2u);
    EXPECT_EQ(proc.disks()[0]->scsi_id, 3u);
    EXPECT_EQ(proc.disks()[1]->scsi_id, 0u);  // first free id
    EXPECT_EQ(proc.disks()[1]->parent, "lsi1");
    EXPECT_EQ(proc.find_function("lsi0")->bus->target(3), proc.disks()[0]->scsi.get());
    ASSERT_NE(proc.find_backend("d1"), nullptr);
    EXPECT_TRUE(proc.find_backend("d1")->read_only());
    EXPECT_EQ(proc.find_backend("d0")->length(), 1u << 20);
    EXPECT_EQ(proc.find_drive("d0")->attached_to, "sd0");
    ASSERT_EQ(proc.monitor_options().size(), 3u);
    EXPECT_EQ(proc.monitor_options()[0].name(), "chardev");
    EXPECT_EQ(proc.monitor_options()[2].text, "unix:/tmp/q,server,nowait");
    // The first-arg socket carries both controllers (lsi0 default); the
    // object's socket carries lsi1.
    ASSERT_EQ(proc.bindings().size(), 2u);
    EXPECT_EQ(proc.bindings()[0].fd, sv[1]);
    EXPECT_EQ(proc.bindings()[0].devices, (std::vector<std::string>{"lsi0", "lsi1"}));
    EXPECT_EQ(proc.bindings()[1].devices, (std::vector<std::string>{"lsi1"}));

    ASSERT_TRUE(proc.start().ok());
    EXPECT_EQ(proc.server()->connections(), 2u);
    // A plain request on the second socket reaches lsi1.
    proto::Channel ch{std::move(peer2)};
    proto::PciConf c{0, 0, 2};
    ASSERT_TRUE(ch.send_struct(proto::Cmd::PciCfgRead, c).ok());
    loop.run_once(1000);
    proto::Frame f;
    ASSERT_EQ(*ch.recv(f), proto::RecvState::Frame);
    EXPECT_EQ(f.as<uint64_t>(), 0x1000u);
    proc.reset_devices();
    // Both peers gone: the loop is told to stop with status 0.
    ch.close();
    peer.reset();
    for (int i = 0; i < 4 && !loop.stopped(); i++) loop.run_once(1000);
    EXPECT_TRUE(loop.stopped());
    proc.shutdown();
}

TEST(RemoteProcess, ErrorsNameTheOption) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    EventLoop loop;
    remote::RemoteProcess proc(loop);
    auto s = proc.configure(parse({"-device", "lsi53c895a,id=l", "-device", "scsi-hd,drive=x"}), b.get());
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().message, "-device scsi-hd,drive=x: Property 'scsi-hd.drive' can't find value 'x'");
}
