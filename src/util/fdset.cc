#include "util/fdset.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>

namespace mpq::fdset {
namespace {

struct OwnedMember {
    UniqueFd fd;
    std::string opaque;
};

struct State {
    std::map<int64_t, std::vector<OwnedMember>> sets;
    std::map<std::string, UniqueFd, std::less<>> named;
    size_t count() const {
        size_t n = named.size();
        for (const auto& [id, m] : sets) n += m.size();
        return n;
    }
};

State& state() {
    static State s;
    return s;
}

}  // namespace

Result<int64_t> add(UniqueFd fd, std::optional<int64_t> id, std::string opaque) {
    State& s = state();
    if (!fd) return fail("No file descriptor supplied via SCM_RIGHTS");
    if (s.count() >= kMaxFds) return fail("Too many file descriptors passed (at most {})", kMaxFds);
    if (id && *id < 0) return fail("Parameter 'fdset-id' expects a non-negative value");
    int64_t set = 0;
    if (id) {
        set = *id;
    } else {
        while (s.sets.count(set)) set++;  // QEMU: the lowest unused id
    }
    s.sets[set].push_back(OwnedMember{std::move(fd), std::move(opaque)});
    return set;
}

Status remove(int64_t id, std::optional<int64_t> fd) {
    State& s = state();
    auto it = s.sets.find(id);
    if (it != s.sets.end()) {
        if (!fd) {
            s.sets.erase(it);
            return {};
        }
        auto& m = it->second;
        auto f = std::find_if(m.begin(), m.end(), [&](const OwnedMember& x) { return x.fd.get() == *fd; });
        if (f != m.end()) {
            m.erase(f);
            if (m.empty()) s.sets.erase(it);
            return {};
        }
    }
    if (fd) return fail("File descriptor named 'fdset-id:{}, fd:{}' not found", id, *fd);
    return fail("File descriptor named 'fdset-id:{}' not found", id);
}

std::vector<FdSetInfo> query() {
    std::vector<FdSetInfo> out;
    for (const auto& [id, m] : state().sets) {
        FdSetInfo i;
        i.id = id;
        for (const auto& x : m) i.fds.push_back(Member{x.fd.get(), x.opaque});
        out.push_back(std::move(i));
    }
    return out;
}

bool is_fdset_path(std::string_view path) { return path.starts_with(kPathPrefix); }

Result<UniqueFd> open_path(std::string_view path, int flags) {
    std::string p(path);
    std::string_view num = path.substr(kPathPrefix.size());
    int64_t id = 0;
    bool ok = !num.empty() && num.size() <= 18;
    for (char c : num) {
        if (c < '0' || c > '9') ok = false;
        else id = id * 10 + (c - '0');
    }
    if (!ok) return fail_errno(EINVAL, "Could not open '{}': Invalid argument", p);
    auto it = state().sets.find(id);
    if (it == state().sets.end())
        return fail_errno(ENOENT, "Could not open '{}': No such file or directory", p);
    const int want = flags & O_ACCMODE;
    for (const auto& m : it->second) {
        int fl = ::fcntl(m.fd.get(), F_GETFL);
        if (fl < 0) continue;
        int have = fl & O_ACCMODE;
        // As QEMU: the member's access mode must be the one asked for (a
        // read-write fd also serves a read-only open).
        if (have != want && !(have == O_RDWR && want == O_RDONLY)) continue;
        UniqueFd dup(::fcntl(m.fd.get(), F_DUPFD_CLOEXEC, 0));
        if (!dup) {
            int e = errno;
            return fail_errno(e, "Could not open '{}': {}", p, std::strerror(e));
        }
        if ((flags & O_DIRECT) && !(fl & O_DIRECT) && ::fcntl(dup.get(), F_SETFL, fl | O_DIRECT) != 0) {
            int e = errno;
            return fail_errno(e, "Could not open '{}': cannot set O_DIRECT: {}", p, std::strerror(e));
        }
        return dup;
    }
    return fail_errno(EACCES, "Could not open '{}': Permission denied", p);
}

Status set_named(std::string name, UniqueFd fd) {
    State& s = state();
    if (!fd) return fail("No file descriptor supplied via SCM_RIGHTS");
    if (!name.empty() && name[0] >= '0' && name[0] <= '9')
        return fail("Parameter 'fdname' expects a name not starting with a digit");
    auto it = s.named.find(name);
    if (it != s.named.end()) {
        it->second = std::move(fd);  // QEMU replaces (and closes) the old one
        return {};
    }
    if (s.count() >= kMaxFds) return fail("Too many file descriptors passed (at most {})", kMaxFds);
    s.named.emplace(std::move(name), std::move(fd));
    return {};
}

Status close_named(std::string_view name) {
    State& s = state();
    auto it = s.named.find(name);
    if (it == s.named.end()) return fail("File descriptor named '{}' not found", name);
    s.named.erase(it);
    return {};
}

Result<UniqueFd> take_named(std::string_view name) {
    State& s = state();
    auto it = s.named.find(name);
    if (it == s.named.end()) return fail("File descriptor named '{}' not found", name);
    UniqueFd fd = std::move(it->second);
    s.named.erase(it);
    return fd;
}

void clear() {
    state().sets.clear();
    state().named.clear();
}

}  // namespace mpq::fdset
