#include "util/fdset.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>

#include <gtest/gtest.h>

#include "util/thread_reserve.h"

namespace mpq {
namespace {

class FdSetTest : public ::testing::Test {
protected:
    void SetUp() override {
        fdset::clear();
        char tmpl[] = "/tmp/mpq-fdset-XXXXXX";
        int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        path_ = tmpl;
        ::close(fd);
    }
    void TearDown() override {
        fdset::clear();
        ::unlink(path_.c_str());
    }
    UniqueFd open_file(int flags) { return UniqueFd(::open(path_.c_str(), flags | O_CLOEXEC)); }
    std::string path_;
};

TEST_F(FdSetTest, AddQueryOpenRemove) {
    EXPECT_EQ(fdset::add(UniqueFd(), std::nullopt, "").error().message,
              "No file descriptor supplied via SCM_RIGHTS");
    UniqueFd rw = open_file(O_RDWR);
    int rw_num = rw.get();
    auto id = fdset::add(std::move(rw), std::nullopt, "disk");
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(*id, 0);  // the lowest free id
    auto q = fdset::query();
    ASSERT_EQ(q.size(), 1u);
    EXPECT_EQ(q[0].fds[0].fd, rw_num);
    EXPECT_EQ(q[0].fds[0].opaque, "disk");

    // A read-write member serves both access modes, as a dup.
    auto a = fdset::open_path("/dev/fdset/0", O_RDWR);
    ASSERT_TRUE(a.ok()) << a.error().message;
    EXPECT_NE(a->get(), rw_num);
    EXPECT_EQ(::fcntl(a->get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    EXPECT_TRUE(fdset::open_path("/dev/fdset/0", O_RDONLY).ok());
    EXPECT_EQ(fdset::open_path("/dev/fdset/7", O_RDWR).error().err, ENOENT);
    EXPECT_EQ(fdset::open_path("/dev/fdset/x", O_RDWR).error().err, EINVAL);

    // A read-only member does not serve a writable open.
    ASSERT_TRUE(fdset::add(open_file(O_RDONLY), 5, "").ok());
    auto w = fdset::open_path("/dev/fdset/5", O_RDWR);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().message, "Could not open '/dev/fdset/5': Permission denied");
    EXPECT_TRUE(fdset::open_path("/dev/fdset/5", O_RDONLY).ok());

    EXPECT_EQ(fdset::remove(0, 999).error().message, "File descriptor named 'fdset-id:0, fd:999' not found");
    EXPECT_TRUE(fdset::remove(0, rw_num).ok());
    EXPECT_EQ(fdset::remove(0, std::nullopt).error().message, "File descriptor named 'fdset-id:0' not found");
    EXPECT_TRUE(fdset::remove(5, std::nullopt).ok());
    EXPECT_TRUE(fdset::query().empty());
}

TEST_F(FdSetTest, BoundedAndNamed) {
    EXPECT_TRUE(fdset::set_named("img", open_file(O_RDONLY)).ok());
    EXPECT_TRUE(fdset::set_named("img", open_file(O_RDONLY)).ok());  // replaced
    EXPECT_FALSE(fdset::set_named("1x", open_file(O_RDONLY)).ok());
    EXPECT_TRUE(fdset::close_named("img").ok());
    EXPECT_EQ(fdset::close_named("img").error().message, "File descriptor named 'img' not found");
    for (size_t i = 0; i < fdset::kMaxFds; ++i) ASSERT_TRUE(fdset::add(open_file(O_RDONLY), 1, "").ok());
    EXPECT_FALSE(fdset::add(open_file(O_RDONLY), 1, "").ok());
}

TEST(ThreadReserve, LendsAndTakesBack) {
    ThreadReserve r(2);
    for (int i = 0; i < 200 && r.idle() < 2; ++i) usleep(1000);
    ASSERT_EQ(r.idle(), 2u);
    std::atomic<int> ran{0};
    auto a = r.run([&] { ran++; });
    auto b = r.run([&] { ran++; });
    ASSERT_TRUE(a && b);
    a->wait();
    b->wait();
    EXPECT_EQ(ran.load(), 2);
    for (int i = 0; i < 200 && r.idle() < 2; ++i) usleep(1000);
    EXPECT_EQ(r.idle(), 2u);  // back in the reserve
    std::atomic<bool> hold{true};
    auto c = r.run([&] { while (hold) usleep(1000); });
    auto d = r.run([&] { while (hold) usleep(1000); });
    ASSERT_TRUE(c && d);
    EXPECT_EQ(r.run([] {}), nullptr);  // all lent out
    hold = false;
    c->wait();
    d->wait();
}

}  // namespace
}  // namespace mpq
