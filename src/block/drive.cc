// `-drive` options and opening a drive's driver stack (format probing).
#include <array>
#include <cerrno>
#include <cstring>

#include "block/blkdebug.h"
#include "block/block.h"
#include "block/fault_inject.h"
#include "block/file.h"
#include "util/log.h"

namespace mpq::block {

namespace {

Result<bool> parse_on_off(const std::string& key, const std::string& v) {
    if (v == "on" || v == "yes" || v == "true") return true;
    if (v == "off" || v == "no" || v == "false") return false;
    return fail("Parameter '{}' expects 'on' or 'off'", key);
}

Result<uint64_t> parse_size(const std::string& key, const std::string& v) {
    if (v.empty()) return fail("Parameter '{}' expects a size", key);
    uint64_t n = 0;
    size_t i = 0;
    for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) {
        uint64_t d = static_cast<uint64_t>(v[i] - '0');
        if (n > (UINT64_MAX - d) / 10) return fail("Parameter '{}' is too large", key);
        n = n * 10 + d;
    }
    if (i == 0) return fail("Parameter '{}' expects a size", key);
    unsigned shift = 0;
    if (i < v.size()) {
        if (i + 1 != v.size()) return fail("Parameter '{}' expects a size", key);
        switch (v[i]) {
            case 'b': case 'B': shift = 0; break;
            case 'k': case 'K': shift = 10; break;
            case 'm': case 'M': shift = 20; break;
            case 'g': case 'G': shift = 30; break;
            case 't': case 'T': shift = 40; break;
            default: return fail("Parameter '{}' expects a size", key);
        }
    }
    if (shift && n > (UINT64_MAX >> shift)) return fail("Parameter '{}' is too large", key);
    return n << shift;
}

}  // namespace

const char* cache_mode_name(CacheMode m) {
    switch (m) {
        case CacheMode::Writeback: return "writeback";
        case CacheMode::None: return "none";
        case CacheMode::Writethrough: return "writethrough";
        case CacheMode::Directsync: return "directsync";
        case CacheMode::Unsafe: return "unsafe";
    }
    return "?";
}

Result<DriveOptions> parse_drive_options(
    const std::vector<std::pair<std::string, std::string>>& kv) {
    DriveOptions o;
    // QEMU's cache= is shorthand for cache.direct + cache.no-flush (+ writethrough).
    int direct = -1, no_flush = -1;
    bool have_cache = false;
    bool driver_blkdebug = false;
    std::string blkdebug_key;  // the first blkdebug-only key seen
    std::string image_filename;
    for (const auto& [k, v] : kv) {
        if (k == "file") {
            o.file = v;
        } else if (k == "id") {
            o.id = v;
        } else if ((k == "format" || k == "driver") && v == "blkdebug") {
            driver_blkdebug = true;
        } else if (k == "format" || k == "driver") {
            if (v != "raw" && v != "qcow2" && v != "file")
                return fail("Unknown driver '{}'", v);
            o.format = v == "file" ? "raw" : v;
        } else if (k == "config") {
            if (blkdebug_key.empty()) blkdebug_key = k;
            o.blkdebug_config = v;
        } else if (k == "image.filename") {
            if (blkdebug_key.empty()) blkdebug_key = k;
            image_filename = v;
        } else if (k == "image.driver") {
            if (blkdebug_key.empty()) blkdebug_key = k;
            if (v != "file" && v != "host_device")
                return fail("blkdebug: image.driver '{}' is not supported (file, host_device)", v);
        } else if (k == "if") {
            if (v != "none")
                return fail("interface '{}' is not supported here (use if=none and -device)", v);
        } else if (k == "cache") {
            have_cache = true;
            if (v == "writeback") o.cache = CacheMode::Writeback;
            else if (v == "none" || v == "off") o.cache = CacheMode::None;
            else if (v == "writethrough") o.cache = CacheMode::Writethrough;
            else if (v == "directsync") o.cache = CacheMode::Directsync;
            else if (v == "unsafe") o.cache = CacheMode::Unsafe;
            else return fail("invalid cache option '{}'", v);
        } else if (k == "cache.direct") {
            auto b = parse_on_off(k, v);
            if (!b) return b.take_error();
            direct = *b;
        } else if (k == "cache.no-flush") {
            auto b = parse_on_off(k, v);
            if (!b) return b.take_error();
            no_flush = *b;
        } else if (k == "aio") {
            if (v == "threads") o.aio = AioMode::Threads;
            else if (v == "native") o.aio = AioMode::Native;
            else if (v == "io_uring") o.aio = AioMode::IoUring;
            else return fail("invalid aio option '{}'", v);
        } else if (k == "readonly" || k == "read-only") {
            auto b = parse_on_off(k, v);
            if (!b) return b.take_error();
            o.read_only = *b ? ReadOnly::Yes : ReadOnly::No;
        } else if (k == "l2-cache-size") {
            auto n = parse_size(k, v);
            if (!n) return n.take_error();
            o.l2_cache_size = *n;
        } else {
            return fail("Invalid parameter '{}'", k);
        }
    }
    if (direct >= 0 || no_flush >= 0) {
        bool d = direct >= 0 ? direct
                             : (o.cache == CacheMode::None || o.cache == CacheMode::Directsync);
        bool nf = no_flush >= 0 ? no_flush : o.cache == CacheMode::Unsafe;
        bool wt = have_cache && (o.cache == CacheMode::Writethrough ||
                                 o.cache == CacheMode::Directsync);
        if (nf) o.cache = CacheMode::Unsafe;  // direct + no-flush has no name: unsafe wins
        else if (d) o.cache = wt ? CacheMode::Directsync : CacheMode::None;
        else o.cache = wt ? CacheMode::Writethrough : CacheMode::Writeback;
    }
    if (o.aio == AioMode::Native && o.cache != CacheMode::None &&
        o.cache != CacheMode::Directsync)
        return fail("aio=native was specified, but it requires cache.direct=on, which was "
                    "not specified.");
    if (driver_blkdebug) {
        // blkdebug is the top node, straight on the file: the guest sees the
        // image's bytes (no format layer), as QEMU's driver=blkdebug.
        if (!o.format.empty()) return fail("driver=blkdebug and format={} both given", o.format);
        o.blkdebug = Blkdebug::Top;
        o.format = "raw";
        if (!image_filename.empty()) {
            if (!o.file.empty() && o.file != image_filename)
                return fail("blkdebug: both file= and image.filename= given");
            o.file = image_filename;
        }
    } else if (!blkdebug_key.empty()) {
        return fail("Invalid parameter '{}' (only with driver=blkdebug)", blkdebug_key);
    }
    // QEMU's legacy filename syntax: blkdebug:[RULES]:IMAGE
    constexpr std::string_view kPrefix = "blkdebug:";
    if (o.file.starts_with(kPrefix)) {
        std::string rest = o.file.substr(kPrefix.size());
        size_t c = rest.find(':');
        if (c == std::string::npos)
            return fail("blkdebug requires both config file and image path");
        if (c > 0) {
            if (!o.blkdebug_config.empty() && o.blkdebug_config != rest.substr(0, c))
                return fail("blkdebug: two different config files given");
            o.blkdebug_config = rest.substr(0, c);
        }
        o.file = rest.substr(c + 1);
        if (o.blkdebug == Blkdebug::Off) o.blkdebug = Blkdebug::UnderFormat;
    }
    if (o.file.empty()) return fail("drive '{}': no file= given", o.id);
    return o;
}

Result<std::unique_ptr<BlockDriver>> open_drive(const DriveOptions& opts) {
    auto file = FileDriver::open(opts);
    if (!file) return file.take_error();
    std::unique_ptr<BlockDriver> drv(std::move(file.value()));
    if (opts.blkdebug != Blkdebug::Off) {
        std::vector<BlkdebugRule> rules;
        if (!opts.blkdebug_config.empty()) {
            auto r = read_blkdebug_config(opts.blkdebug_config);
            if (!r) return r.take_error();
            rules = std::move(*r);
        }
        auto fi = std::make_unique<FaultInjectDriver>(std::move(drv));
        // driver=blkdebug is the top node: parse_drive_options set format
        // "raw" for it, but no raw layer above raises read/write_aio.
        BlkdebugPosition pos = opts.blkdebug == Blkdebug::Top ? BlkdebugPosition::Top
                                                              : BlkdebugPosition::UnderFormat;
        fi->set_blkdebug(std::make_unique<BlkdebugRules>(std::move(rules), pos));
        drv = std::move(fi);
    }

    std::string fmt = opts.format;
    if (fmt.empty()) {
        std::array<uint8_t, 4096> head{};
        uint64_t n = std::min<uint64_t>(head.size(), drv->length());
        if (n > 0) MPQ_TRY(drv->pread(0, std::span<uint8_t>(head.data(), n)));
        static constexpr uint8_t kQcow2Magic[4] = {'Q', 'F', 'I', 0xfb};
        if (n >= 4 && std::memcmp(head.data(), kQcow2Magic, 4) == 0) {
            fmt = "qcow2";
        } else {
            fmt = "raw";
            log::warn("Image format was not specified for '{}' and probing guessed raw. "
                      "Automatically detecting the format is dangerous for raw images; "
                      "unlike QEMU, write operations on block 0 are NOT restricted. "
                      "Specify the 'raw' format explicitly to remove this warning.",
                      opts.file);
        }
    }
    if (fmt == "qcow2") return open_qcow2(std::move(drv), opts);
    if (fmt == "raw") return drv;
    return fail("Unknown driver '{}'", fmt);
}

}  // namespace mpq::block
