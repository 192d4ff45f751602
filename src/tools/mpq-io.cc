// mpq-io: exercise a disk image through mpqemu's block layer, in the spirit
// of qemu-io. Exit status is non-zero as soon as any command fails.
//
//   mpq-io [-f raw|qcow2] [-r] [-t CACHE] [-L L2_CACHE_BYTES] IMAGE -c CMD [-c CMD...] [-s SCRIPT]
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "block/block.h"
#include "block/qcow2.h"
#include "util/log.h"
#include "util/unique_fd.h"

using namespace mpq;
using namespace mpq::block;

namespace {

void usage() {
    std::fprintf(stderr,
                 "usage: mpq-io [-f raw|qcow2] [-r] [-t cache-mode] [-L l2-cache-bytes] IMAGE [-c CMD]... [-s SCRIPT]\n"
                 "commands:\n"
                 "  read [-P byte] OFF LEN       read (and check every byte equals the pattern)\n"
                 "  write [-P byte] [-z] OFF LEN write a pattern (default 0xcd) or zeroes (-z)\n"
                 "  discard OFF LEN              discard whole clusters in the range\n"
                 "  flush                        flush to stable storage\n"
                 "  verify FILE OFF LEN          compare the range with the same range of FILE\n"
                 "  info                         print format details\n"
                 "  bench randread|randwrite|seqread|seqwrite BS COUNT [SEED|step=N]\n"
                 "  writeloop SEED COUNT MAXLEN  flushed random writes, each reported when durable\n"
                 "sizes take k/M/G suffixes (powers of 1024)\n");
}

Result<uint64_t> parse_size(const std::string& s) {
    if (s.empty()) return fail("empty number");
    size_t idx = 0;
    unsigned long long v;
    try {
        v = std::stoull(s, &idx, 0);
    } catch (...) {
        return fail("invalid number '{}'", s);
    }
    std::string suf = s.substr(idx);
    unsigned shift = 0;
    if (suf == "" || suf == "b" || suf == "B") shift = 0;
    else if (suf == "k" || suf == "K") shift = 10;
    else if (suf == "m" || suf == "M") shift = 20;
    else if (suf == "g" || suf == "G") shift = 30;
    else if (suf == "t" || suf == "T") shift = 40;
    else return fail("invalid size suffix in '{}'", s);
    if (shift && v > (UINT64_MAX >> shift)) return fail("size '{}' too large", s);
    return uint64_t(v) << shift;
}

std::vector<std::string> split(const std::string& line) {
    std::istringstream is(line);
    std::vector<std::string> out;
    std::string w;
    while (is >> w) out.push_back(w);
    return out;
}

struct Tool {
    BlockDriver* drv = nullptr;

    Status range(uint64_t off, uint64_t len) const {
        if (off > drv->length() || len > drv->length() - off)
            return fail("range {}+{} is beyond the disk ({} bytes)", off, len, drv->length());
        return {};
    }

    Status cmd_read(const std::vector<std::string>& a) {
        int pattern = -1;
        size_t i = 1;
        if (i < a.size() && a[i] == "-P") {
            if (i + 1 >= a.size()) return fail("read: -P needs a value");
            auto p = parse_size(a[i + 1]);
            if (!p || *p > 255) return fail("read: bad pattern");
            pattern = int(*p);
            i += 2;
        }
        if (a.size() != i + 2) return fail("read: usage: read [-P byte] OFF LEN");
        auto off = parse_size(a[i]);
        auto len = parse_size(a[i + 1]);
        if (!off) return off.take_error();
        if (!len) return len.take_error();
        MPQ_TRY(range(*off, *len));
        std::vector<uint8_t> buf(std::min<uint64_t>(*len, 16 << 20));
        for (uint64_t pos = 0; pos < *len; pos += buf.size()) {
            uint64_t n = std::min<uint64_t>(buf.size(), *len - pos);
            MPQ_TRY(drv->pread(*off + pos, {buf.data(), n}));
            if (pattern >= 0)
                for (uint64_t k = 0; k < n; k++)
                    if (buf[k] != pattern)
                        return fail("read: pattern mismatch at offset {}: {:#04x} != {:#04x}", *off + pos + k,
                                    buf[k], pattern);
        }
        std::printf("read %llu/%llu bytes at offset %llu\n", (unsigned long long)*len, (unsigned long long)*len,
                    (unsigned long long)*off);
        return {};
    }

    Status cmd_write(const std::vector<std::string>& a) {
        int pattern = 0xcd;
        bool zero = false;
        size_t i = 1;
        while (i < a.size() && a[i][0] == '-') {
            if (a[i] == "-z") {
                zero = true;
                i++;
            } else if (a[i] == "-P" && i + 1 < a.size()) {
                auto p = parse_size(a[i + 1]);
                if (!p || *p > 255) return fail("write: bad pattern");
                pattern = int(*p);
                i += 2;
            } else {
                return fail("write: unknown option '{}'", a[i]);
            }
        }
        if (a.size() != i + 2) return fail("write: usage: write [-P byte] [-z] OFF LEN");
        auto off = parse_size(a[i]);
        auto len = parse_size(a[i + 1]);
        if (!off) return off.take_error();
        if (!len) return len.take_error();
        MPQ_TRY(range(*off, *len));
        if (zero) {
            MPQ_TRY(drv->write_zeroes(*off, *len));
        } else {
            std::vector<uint8_t> buf(std::min<uint64_t>(*len, 16 << 20), uint8_t(pattern));
            for (uint64_t pos = 0; pos < *len; pos += buf.size())
                MPQ_TRY(drv->pwrite(*off + pos, {buf.data(), std::min<uint64_t>(buf.size(), *len - pos)}));
        }
        std::printf("wrote %llu/%llu bytes at offset %llu\n", (unsigned long long)*len, (unsigned long long)*len,
                    (unsigned long long)*off);
        return {};
    }

    Status cmd_discard(const std::vector<std::string>& a) {
        if (a.size() != 3) return fail("discard: usage: discard OFF LEN");
        auto off = parse_size(a[1]);
        auto len = parse_size(a[2]);
        if (!off) return off.take_error();
        if (!len) return len.take_error();
        MPQ_TRY(range(*off, *len));
        MPQ_TRY(drv->discard(*off, *len));
        std::printf("discard %llu/%llu bytes at offset %llu\n", (unsigned long long)*len, (unsigned long long)*len,
                    (unsigned long long)*off);
        return {};
    }

    Status cmd_verify(const std::vector<std::string>& a) {
        if (a.size() != 4) return fail("verify: usage: verify FILE OFF LEN");
        auto off = parse_size(a[2]);
        auto len = parse_size(a[3]);
        if (!off) return off.take_error();
        if (!len) return len.take_error();
        MPQ_TRY(range(*off, *len));
        UniqueFd fd(::open(a[1].c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) return fail("verify: '{}': {}", a[1], std::strerror(errno));
        std::vector<uint8_t> mine(std::min<uint64_t>(*len, 4 << 20)), ref(mine.size());
        for (uint64_t pos = 0; pos < *len; pos += mine.size()) {
            uint64_t n = std::min<uint64_t>(mine.size(), *len - pos);
            MPQ_TRY(drv->pread(*off + pos, {mine.data(), n}));
            uint64_t got = 0;
            while (got < n) {
                ssize_t r = ::pread(fd.get(), ref.data() + got, n - got, off_t(*off + pos + got));
                if (r < 0 && errno == EINTR) continue;
                if (r < 0) return fail("verify: '{}': {}", a[1], std::strerror(errno));
                if (r == 0) break;
                got += uint64_t(r);
            }
            std::memset(ref.data() + got, 0, n - got);
            if (std::memcmp(mine.data(), ref.data(), n) != 0) {
                for (uint64_t k = 0; k < n; k++)
                    if (mine[k] != ref[k])
                        return fail("verify: mismatch at offset {}: image {:#04x}, file {:#04x}", *off + pos + k,
                                    mine[k], ref[k]);
            }
        }
        std::printf("verify %llu bytes at offset %llu: identical\n", (unsigned long long)*len,
                    (unsigned long long)*off);
        return {};
    }

    Status cmd_info() {
        std::printf("format: %s\nvirtual size: %llu\n", drv->format_name().c_str(),
                    (unsigned long long)drv->length());
        if (auto* q = dynamic_cast<qcow2::Qcow2Driver*>(drv)) {
            const auto& h = q->header();
            std::printf("version: %u\ncluster size: %llu\nrefcount bits: %u\ncompression: %s\n", h.version,
                        (unsigned long long)h.cluster_size(), 1u << h.refcount_order,
                        h.compression_type == qcow2::kCompressionZstd ? "zstd" : "zlib");
            std::printf("lazy refcounts: %s\n", (h.compatible & qcow2::kCompatLazyRefcounts) ? "on" : "off");
            if (!h.backing_file.empty())
                std::printf("backing file: %s (format %s)\n", h.backing_file.c_str(),
                            h.backing_format.empty() ? "probed" : h.backing_format.c_str());
            std::printf("snapshots: %zu\n", q->snapshots().size());
            for (const auto& s : q->snapshots())
                std::printf("  id %s name '%s' vm-state %llu l1 %u entries\n", s.id.c_str(), s.name.c_str(),
                            (unsigned long long)s.vm_state_size, s.l1_size);
            auto cs = q->cache_stats();
            std::printf("l2 cache: %zu tables max\n", cs.l2_capacity);
            if (q->rebuilt_refcounts()) std::printf("refcounts rebuilt at open\n");
        }
        return {};
    }

    // `step=N` replays qemu-img bench's offset sequence (0, N, 2N, ... mod
    // disk size) so that both tools see the same requests.
    Status cmd_bench(const std::vector<std::string>& a) {
        if (a.size() < 4 || a.size() > 5) return fail("bench: usage: bench MODE BS COUNT [SEED|step=N]");
        const std::string& mode = a[1];
        auto bs = parse_size(a[2]);
        auto count = parse_size(a[3]);
        if (!bs || !count || *bs == 0 || *bs > (64 << 20)) return fail("bench: bad block size or count");
        uint64_t seed = 1, step = 0;
        if (a.size() == 5) {
            bool is_step = a[4].rfind("step=", 0) == 0;
            auto v = parse_size(is_step ? a[4].substr(5) : a[4]);
            if (!v) return v.take_error();
            (is_step ? step : seed) = *v;
        }
        bool rnd = mode == "randread" || mode == "randwrite";
        bool wr = mode == "randwrite" || mode == "seqwrite";
        if (!rnd && mode != "seqread" && mode != "seqwrite") return fail("bench: unknown mode '{}'", mode);
        const uint64_t size = drv->length();
        uint64_t blocks = size / *bs;
        if (blocks == 0) return fail("bench: disk smaller than one block");
        if (!rnd && step == 0) step = *bs;
        // Page aligned, as a guest's buffers are: cache=none needs no bounce.
        std::unique_ptr<uint8_t, decltype(&std::free)> mem(
            static_cast<uint8_t*>(std::aligned_alloc(4096, (*bs + 4095) & ~uint64_t(4095))), &std::free);
        if (!mem) return fail("bench: out of memory");
        std::memset(mem.get(), 0x5a, *bs);
        std::span<uint8_t> buf(mem.get(), *bs);
        std::mt19937_64 rng(seed);
        uint64_t off = 0;
        auto t0 = std::chrono::steady_clock::now();
        for (uint64_t i = 0; i < *count; i++) {
            uint64_t cur = off;
            if (step) {
                off = (off + step) % size;
                if (cur + *bs > size) cur = 0;
            } else {
                cur = (rng() % blocks) * *bs;
            }
            if (wr) MPQ_TRY(drv->pwrite(cur, buf));
            else MPQ_TRY(drv->pread(cur, buf));
        }
        // Like qemu-img bench, the final flush is not part of the timed run.
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (secs <= 0) secs = 1e-9;
        if (wr) MPQ_TRY(drv->flush());
        std::printf("bench %s bs=%llu ops=%llu secs=%.4f iops=%.1f MBps=%.2f\n", mode.c_str(),
                    (unsigned long long)*bs, (unsigned long long)*count, secs, double(*count) / secs,
                    double(*count) * double(*bs) / secs / 1e6);
        return {};
    }

    Status cmd_writeloop(const std::vector<std::string>& a) {
        if (a.size() != 4) return fail("writeloop: usage: writeloop SEED COUNT MAXLEN");
        auto seed = parse_size(a[1]);
        auto count = parse_size(a[2]);
        auto maxlen = parse_size(a[3]);
        if (!seed || !count || !maxlen || *maxlen < 512) return fail("writeloop: bad arguments");
        uint64_t sectors = drv->length() / 512;
        uint64_t max_sectors = *maxlen / 512;
        if (sectors < max_sectors) return fail("writeloop: disk too small");
        std::mt19937_64 rng(*seed);
        std::vector<uint8_t> buf(max_sectors * 512);
        for (uint64_t i = 0; i < *count; i++) {
            uint64_t n = 1 + rng() % max_sectors;
            uint64_t s = rng() % (sectors - n + 1);
            uint8_t pat = uint8_t(1 + i % 255);
            std::printf("begin %llu %llu %llu %u\n", (unsigned long long)i, (unsigned long long)(s * 512),
                        (unsigned long long)(n * 512), pat);
            std::fflush(stdout);
            std::memset(buf.data(), pat, n * 512);
            MPQ_TRY(drv->pwrite(s * 512, {buf.data(), n * 512}));
            MPQ_TRY(drv->flush());
            std::printf("done %llu\n", (unsigned long long)i);
            std::fflush(stdout);
        }
        return {};
    }

    Status run(const std::string& line) {
        auto a = split(line);
        if (a.empty()) return {};
        const std::string& c = a[0];
        if (c == "read") return cmd_read(a);
        if (c == "write") return cmd_write(a);
        if (c == "discard") return cmd_discard(a);
        if (c == "flush") return drv->flush();
        if (c == "verify") return cmd_verify(a);
        if (c == "info") return cmd_info();
        if (c == "bench") return cmd_bench(a);
        if (c == "writeloop") return cmd_writeloop(a);
        return fail("unknown command '{}'", c);
    }
};

Result<std::unique_ptr<BlockDriver>> open_image(const std::string& path, const std::string& format, ReadOnly ro,
                                                uint64_t l2_cache, CacheMode cache) {
    DriveOptions o;
    o.file = path;
    o.format = format;
    o.read_only = ro;
    o.cache = cache;
    o.l2_cache_size = l2_cache;
    if (format.empty()) {
        // Probe here so that raw images do not trigger open_drive's warning.
        auto f = qcow2::open_host_file(path, ReadOnly::Yes);
        if (!f) return f.take_error();
        uint8_t magic[4] = {};
        if ((*f)->length() >= 4) MPQ_TRY((*f)->pread(0, magic));
        o.format = qcow2::probe(magic) ? "qcow2" : "raw";
    }
    return open_drive(o);
}

}  // namespace

int main(int argc, char** argv) {
    log::set_program_name("mpq-io");
    std::string format, image;
    ReadOnly ro = ReadOnly::No;
    uint64_t l2_cache = 0;
    CacheMode cache = CacheMode::Writeback;
    std::vector<std::string> cmds;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto need = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "mpq-io: option %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "-f") format = need();
        else if (a == "-t") {
            std::string m = need();
            if (m == "writeback") cache = CacheMode::Writeback;
            else if (m == "none") cache = CacheMode::None;
            else if (m == "writethrough") cache = CacheMode::Writethrough;
            else if (m == "directsync") cache = CacheMode::Directsync;
            else if (m == "unsafe") cache = CacheMode::Unsafe;
            else {
                std::fprintf(stderr, "mpq-io: unknown cache mode %s\n", m.c_str());
                return 2;
            }
        }
        else if (a == "-r") ro = ReadOnly::Yes;
        else if (a == "-L") {
            auto v = parse_size(need());
            if (!v) {
                std::fprintf(stderr, "mpq-io: %s\n", v.error().message.c_str());
                return 2;
            }
            l2_cache = *v;
        } else if (a == "-c") cmds.push_back(need());
        else if (a == "-s") {
            std::ifstream in(need());
            if (!in) {
                std::fprintf(stderr, "mpq-io: cannot read script\n");
                return 2;
            }
            for (std::string line; std::getline(in, line);) cmds.push_back(line);
        } else if (a == "-h" || a == "--help") {
            usage();
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            std::fprintf(stderr, "mpq-io: unknown option %s\n", a.c_str());
            usage();
            return 2;
        } else if (image.empty()) image = a;
        else {
            usage();
            return 2;
        }
    }
    if (image.empty()) {
        usage();
        return 2;
    }
    auto drv = open_image(image, format, ro, l2_cache, cache);
    if (!drv) {
        std::fprintf(stderr, "mpq-io: %s\n", drv.error().message.c_str());
        return 1;
    }
    Tool t{drv->get()};
    int rc = 0;
    for (const auto& c : cmds) {
        if (auto st = t.run(c); !st) {
            std::fprintf(stderr, "mpq-io: %s: %s\n", c.c_str(), st.error().message.c_str());
            rc = 1;
            break;
        }
    }
    if (auto* q = dynamic_cast<qcow2::Qcow2Driver*>(drv->get())) {
        if (auto st = q->close(); !st) {
            std::fprintf(stderr, "mpq-io: close: %s\n", st.error().message.c_str());
            rc = 1;
        }
    }
    std::fflush(stdout);
    return rc;
}
