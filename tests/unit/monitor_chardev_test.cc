#include "monitor/chardev_spec.h"

#include <gtest/gtest.h>

namespace mpq::monitor {
namespace {

TEST(MonitorChardev, UnixServerNowait) {
    auto c = parse_chardev_shorthand("unix:/tmp/m.sock,server,nowait", "compat_monitor0");
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(c->kind, ChardevKind::Unix);
    EXPECT_EQ(c->path, "/tmp/m.sock");
    EXPECT_EQ(c->server, ServerMode::Server);
    EXPECT_EQ(c->wait, WaitMode::NoWait);
    EXPECT_EQ(c->id, "compat_monitor0");
    EXPECT_EQ(c->describe(), "unix:/tmp/m.sock,server=on");
}

TEST(MonitorChardev, UnixExplicitBooleans) {
    auto c = parse_chardev_shorthand("unix:/tmp/m.sock,server=on,wait=off", "x");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->server, ServerMode::Server);
    EXPECT_EQ(c->wait, WaitMode::NoWait);
    auto d = parse_chardev_shorthand("unix:/tmp/m.sock,server=on", "x");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->wait, WaitMode::Wait);  // QEMU's default for a server
    auto e = parse_chardev_shorthand("unix:/tmp/m.sock", "x");
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->server, ServerMode::Client);
}

TEST(MonitorChardev, CommaEscapeInPath) {
    auto c = parse_chardev_shorthand("unix:/tmp/a,,b.sock,server,nowait", "x");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->path, "/tmp/a,b.sock");
}

TEST(MonitorChardev, Tcp) {
    auto c = parse_chardev_shorthand("tcp:127.0.0.1:4444,server,nowait", "x");
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(c->kind, ChardevKind::Tcp);
    EXPECT_EQ(c->host, "127.0.0.1");
    EXPECT_EQ(c->port, 4444);
    EXPECT_EQ(c->describe(), "tcp:127.0.0.1:4444,server=on");
    auto v6 = parse_chardev_shorthand("tcp:[::1]:5555,server=on,wait=off", "x");
    ASSERT_TRUE(v6.ok());
    EXPECT_EQ(v6->host, "::1");
    auto nohost = parse_chardev_shorthand("tcp::4444,server,nowait", "x");
    ASSERT_TRUE(nohost.ok());
    EXPECT_EQ(nohost->host, "");
    EXPECT_EQ(nohost->describe(), "tcp:127.0.0.1:4444,server=on");
}

TEST(MonitorChardev, StdioAndNone) {
    auto s = parse_chardev_shorthand("stdio", "x");
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->kind, ChardevKind::Stdio);
    auto n = parse_chardev_shorthand("none", "x");
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n->kind, ChardevKind::Null);
}

TEST(MonitorChardev, RejectsBadShorthand) {
    for (const char* bad :
         {"", "unix:", "tcp:127.0.0.1", "tcp:127.0.0.1:99999", "tcp:127.0.0.1:-1", "tcp:h:12x",
          "file:/tmp/x", "unix:/tmp/x,server=maybe", "unix:/tmp/x,bogus", "unix:/tmp/x,",
          "unix:/tmp/x,=on", "unix:/tmp/x,nowait=on", "vc", "pty"}) {
        EXPECT_FALSE(parse_chardev_shorthand(bad, "x").ok()) << bad;
    }
    std::string longpath = "unix:/" + std::string(200, 'a') + ",server,nowait";
    EXPECT_FALSE(parse_chardev_shorthand(longpath, "x").ok());
    std::string huge(10000, 'a');
    EXPECT_FALSE(parse_chardev_shorthand(huge, "x").ok());
}

TEST(MonitorChardev, ChardevOption) {
    auto c = parse_chardev_option("socket,id=mon0,path=/tmp/q.sock,server=on,wait=off");
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(c->id, "mon0");
    EXPECT_EQ(c->kind, ChardevKind::Unix);
    EXPECT_EQ(c->server, ServerMode::Server);
    EXPECT_EQ(c->wait, WaitMode::NoWait);
    auto t = parse_chardev_option("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off");
    ASSERT_TRUE(t.ok()) << t.error().message;
    EXPECT_EQ(t->kind, ChardevKind::Tcp);
    EXPECT_EQ(t->port, 0);
    auto s = parse_chardev_option("stdio,id=s,signal=off");
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->kind, ChardevKind::Stdio);
}

TEST(MonitorChardev, ChardevOptionErrors) {
    for (const char* bad :
         {"socket,path=/tmp/x,server=on", "socket,id=x", "socket,id=x,path=/a,port=3",
          "socket,id=1x,path=/a", "socket,id=x,path=/a,color=red", "serial,id=x",
          "stdio,id=x,path=/a", "socket,id=x,host=h,port=65536", "socket,id=x y,path=/a"}) {
        EXPECT_FALSE(parse_chardev_option(bad).ok()) << bad;
    }
}

TEST(MonitorChardev, OptionsPairMonWithChardev) {
    MonitorOptions o;
    auto r = o.consume("-chardev", "socket,id=qmp0,path=/tmp/q.sock,server=on,wait=off");
    ASSERT_TRUE(r.ok() && *r);
    r = o.consume("-mon", "chardev=qmp0,mode=control,pretty=on");
    ASSERT_TRUE(r.ok() && *r);
    r = o.consume("-monitor", "unix:/tmp/h.sock,server,nowait");
    ASSERT_TRUE(r.ok() && *r);
    r = o.consume("--qmp", "tcp:127.0.0.1:0,server,nowait");
    ASSERT_TRUE(r.ok() && *r);
    r = o.consume("-monitor", "none");
    ASSERT_TRUE(r.ok() && *r);
    r = o.consume("-drive", "file=x");
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(*r);
    ASSERT_TRUE(o.finish().ok());
    ASSERT_EQ(o.monitors().size(), 3u);
    EXPECT_EQ(o.monitors()[0].mode, MonitorMode::Hmp);
    EXPECT_EQ(o.monitors()[0].chardev.id, "compat_monitor0");
    EXPECT_EQ(o.monitors()[1].mode, MonitorMode::Qmp);
    EXPECT_EQ(o.monitors()[1].chardev.id, "compat_monitor1");
    EXPECT_EQ(o.monitors()[2].mode, MonitorMode::Qmp);
    EXPECT_EQ(o.monitors()[2].pretty, Pretty::On);
    EXPECT_EQ(o.monitors()[2].chardev.id, "qmp0");
}

TEST(MonitorChardev, OptionsErrors) {
    {
        MonitorOptions o;
        ASSERT_TRUE(o.consume("-mon", "chardev=nope").ok());
        EXPECT_FALSE(o.finish().ok());
    }
    {
        MonitorOptions o;
        EXPECT_FALSE(o.consume("-mon", "chardev=x,mode=fancy").ok());
        EXPECT_FALSE(o.consume("-mon", "mode=control").ok());
        EXPECT_FALSE(o.consume("-monitor", "unix:").ok());
    }
    {
        MonitorOptions o;
        ASSERT_TRUE(o.consume("-chardev", "socket,id=a,path=/tmp/a,server=on").ok());
        EXPECT_FALSE(o.consume("-chardev", "socket,id=a,path=/tmp/b,server=on").ok());
        ASSERT_TRUE(o.consume("-mon", "chardev=a").ok());
        ASSERT_TRUE(o.consume("-mon", "chardev=a,mode=control").ok());
        EXPECT_FALSE(o.finish().ok());  // one chardev, two monitors
    }
    {
        MonitorOptions o;
        ASSERT_TRUE(o.consume("-monitor", "stdio").ok());
        ASSERT_TRUE(o.consume("-qmp", "stdio").ok());
        EXPECT_FALSE(o.finish().ok());
    }
}

}  // namespace
}  // namespace mpq::monitor
