#include "vmm/vmm.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "block/block.h"
#include "hw/lsi53c895a.h"
#include "scsi/scsi_hd.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/proxy.h"
#include "vmm/qtest.h"
#include "vmm/qtest_chardev.h"

namespace mpq::vmm {

namespace {

constexpr std::string_view kAccepted[] = {
    "device", "drive", "object", "machine", "M", "m", "accel", "qtest", "qtest-log",
    "display", "nographic", "nodefaults", "S", "name", "D", "numa", "vga", "serial",
    "no-reboot", "no-shutdown", "pidfile", "smp", "cpu", "qmp", "monitor", "mon", "chardev",
    "enable-kvm", "h", "help", "version", "trace", "msg", "global", "boot",
};

constexpr uint64_t kDefaultRamMiB = 128;

struct MemBackend {
    std::string id;
    uint64_t size = 0;
    RamBacking backing = RamBacking::Anonymous;
    RamShare share = RamShare::Private;
    RamSeal seal = RamSeal::Sealed;
};

bool machine_type_ok(std::string_view t) {
    return t.empty() || t == "pc" || t.starts_with("pc-i440fx") || t == "none-but-pc";
}

// "addr=SLOT[.FN]" in hex, as QEMU's PCI address property.
Result<int> parse_pci_addr(std::string_view s) {
    auto dot = s.find('.');
    std::string_view slot = s.substr(0, dot), fn = dot == std::string_view::npos ? "0" : s.substr(dot + 1);
    if (slot.starts_with("0x")) slot.remove_prefix(2);
    auto hex = [](std::string_view v, int max) -> std::optional<int> {
        if (v.empty() || v.size() > 2) return std::nullopt;
        int x = 0;
        for (char c : v) {
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) return std::nullopt;
            x = x * 16 + d;
        }
        return x <= max ? std::optional<int>(x) : std::nullopt;
    };
    auto sl = hex(slot, 31), f = hex(fn, 7);
    if (!sl || !f) return fail("Property 'addr' doesn't take value '{}'", s);
    return make_devfn(*sl, *f);
}

}  // namespace

std::span<const std::string_view> vmm_accepted_options() { return kAccepted; }

Result<std::unique_ptr<Vmm>> Vmm::create(EventLoop& loop, const opts::CommandLine& cl) {
    std::unique_ptr<Vmm> v(new Vmm(loop, cl));
    MPQ_TRY(v->build());
    return v;
}

Vmm::Vmm(EventLoop& loop, opts::CommandLine cl) : loop_(loop), cl_(std::move(cl)) {}

Vmm::~Vmm() {
    qtest_chr_.reset();
    qtest_.reset();
    if (qtest_log_ && qtest_log_ != stderr) std::fclose(qtest_log_);
    // Guest writes already acknowledged must reach the image.
    for (auto& [id, be] : backends_) {
        be->drain();
        if (auto st = be->driver().flush(); !st.ok()) log::error("drive {}: flush: {}", id, st.error().message);
    }
    proxies_.clear();
    lsis_.clear();
    disks_.clear();
    backends_.clear();
    machine_.reset();
    links_.clear();
}

Status Vmm::build_ram() {
    std::map<std::string, MemBackend> backends;
    for (const auto* o : cl_.all("object")) {
        std::string type = o->kv.get("qom-type");
        if (type != "memory-backend-memfd" && type != "memory-backend-ram") {
            return o->error("object type '{}' is not supported (memory-backend-memfd, memory-backend-ram)", type);
        }
        static constexpr std::string_view known[] = {"qom-type", "id", "size", "share", "seal", "hugetlb", "prealloc", "merge", "dump", "policy", "host-nodes"};
        if (auto st = opts::check_known_keys(o->kv, type, known); !st.ok()) return o->error(st.error());
        MemBackend b;
        b.id = o->kv.get("id");
        if (b.id.empty()) return o->error("Parameter 'id' is missing");
        auto sz = opts::parse_size(o->kv.get("size"), "size");
        if (!sz.ok()) return o->error(sz.error());
        b.size = *sz;
        if (b.size == 0) return o->error("property 'size' of {} is required", type);
        b.backing = type == "memory-backend-memfd" ? RamBacking::Memfd : RamBacking::Anonymous;
        // memfd backends are shared by default, ram backends private.
        bool share = b.backing == RamBacking::Memfd;
        if (o->kv.has("share")) {
            auto s = opts::parse_bool(o->kv.get("share"), "share");
            if (!s.ok()) return o->error(s.error());
            share = *s;
        }
        b.share = share ? RamShare::Shared : RamShare::Private;
        if (o->kv.has("seal")) {
            auto s = opts::parse_bool(o->kv.get("seal"), "seal");
            if (!s.ok()) return o->error(s.error());
            b.seal = *s ? RamSeal::Sealed : RamSeal::Unsealed;
        }
        if (o->kv.get("hugetlb") == "on") return o->error("hugetlb is not supported");
        if (backends.count(b.id)) return o->error("attempt to add duplicate property '{}'", b.id);
        backends[b.id] = b;
    }

    std::string mem_id;
    for (const auto* o : cl_.all("machine")) {
        if (auto t = o->kv.get("type"); !machine_type_ok(t)) {
            return o->error("unsupported machine type '{}' (this VMM emulates 'pc')", t);
        }
        static constexpr std::string_view known[] = {"type", "memory-backend", "accel", "usb", "graphics", "vmport", "hpet", "smm", "kernel-irqchip", "kernel_irqchip", "dump-guest-core", "mem-merge", "pit", "pic", "sata", "smbus", "i8042"};
        if (auto st = opts::check_known_keys(o->kv, "pc-i440fx-7.2-machine", known); !st.ok()) return o->error(st.error());
        if (o->kv.has("memory-backend")) mem_id = o->kv.get("memory-backend");
    }
    for (const auto* o : cl_.all("M")) {
        if (auto t = o->kv.get("type"); !machine_type_ok(t)) return o->error("unsupported machine type '{}'", t);
        if (o->kv.has("memory-backend")) mem_id = o->kv.get("memory-backend");
    }
    for (const auto* o : cl_.all("numa")) {
        if (o->kv.get("type") != "node") return o->error("only 'node' is supported");
        if (o->kv.has("memdev")) mem_id = o->kv.get("memdev");
    }

    uint64_t ram_size = 0;
    const opts::Option* m = cl_.last("m");
    if (m) {
        std::string s = m->kv.get("size");
        auto sz = opts::parse_size(s, "size", 1 << 20);
        if (!sz.ok()) return m->error(sz.error());
        ram_size = *sz;
    }
    MemBackend chosen;
    if (!mem_id.empty()) {
        auto it = backends.find(mem_id);
        if (it == backends.end()) return fail("Memory backend '{}' not found", mem_id);
        chosen = it->second;
        if (ram_size && ram_size != chosen.size) {
            return fail("Machine memory size {:#x} does not match the size of memory backend '{}' ({:#x})",
                        ram_size, mem_id, chosen.size);
        }
        ram_size = chosen.size;
    } else {
        if (!ram_size) ram_size = kDefaultRamMiB << 20;
        chosen.backing = RamBacking::Anonymous;
        chosen.share = RamShare::Private;
    }
    auto ram = GuestRam::create(ram_size, chosen.backing, chosen.share, mem_id.empty() ? "pc.ram" : mem_id,
                                chosen.seal);
    if (!ram.ok()) return ram.take_error();
    machine_ = std::make_unique<Machine>(loop_, std::move(*ram));
    return {};
}

Status Vmm::build() {
    // Accelerator: there is no vCPU; qtest (or a stopped TCG) drives the machine.
    std::string accel;
    for (const auto* o : cl_.all("machine"))
        if (o->kv.has("accel")) accel = o->kv.get("accel");
    for (const auto* o : cl_.all("accel")) accel = o->kv.get("accel");
    if (cl_.has("enable-kvm")) accel = "kvm";
    if (accel.find(':') != std::string::npos) accel = accel.substr(0, accel.find(':'));
    if (accel == "kvm" || accel == "xen" || accel == "hvf" || accel == "whpx") {
        return fail("accelerator '{}' is not available: this VMM has no vCPU (use -accel qtest)", accel);
    }
    if (!accel.empty() && accel != "qtest" && accel != "tcg") return fail("invalid accelerator {}", accel);
    qtest_accel_ = accel == "qtest";
    start_stopped_ = cl_.has("S") || qtest_accel_ || cl_.has("qtest");
    if (auto* d = cl_.last("display"); d && d->kv.get("type") != "none") {
        return d->error("display '{}' is not available (only -display none)", d->kv.get("type"));
    }

    MPQ_TRY(build_ram());

    for (const auto* o : cl_.options.empty() ? std::vector<const opts::Option*>{} : cl_.all("device")) {
        MPQ_TRY(add_device(*o));
    }

    for (const auto& o : cl_.options) {
        if (o.name() == "qmp" || o.name() == "qmp-pretty") {
            monitors_.push_back({MonitorSpec::Kind::Qmp, o.text, o.name() == "qmp-pretty"});
        } else if (o.name() == "monitor") {
            monitors_.push_back({MonitorSpec::Kind::Hmp, o.text, false});
        } else if (o.name() == "mon") {
            bool qmp = o.kv.get("mode") == "control";
            monitors_.push_back({qmp ? MonitorSpec::Kind::Qmp : MonitorSpec::Kind::Hmp,
                                 "chardev:" + o.kv.get("chardev"), o.kv.get("pretty") == "on"});
        }
    }
    machine_->add_reset_handler([this] { events_.reset_done(); });
    return {};
}

Result<int> Vmm::pick_devfn(const opts::Option& o) {
    if (o.kv.has("addr")) {
        auto a = parse_pci_addr(o.kv.get("addr"));
        if (!a.ok()) return o.error(a.error());
        return *a;
    }
    auto f = machine_->bus().free_devfn();
    if (!f.ok()) return o.error(f.error());
    return *f;
}

Status Vmm::add_device(const opts::Option& o) {
    std::string driver = o.kv.get("driver");
    std::string id = o.kv.get("id");
    if (!id.empty()) {
        if (auto st = opts::check_id(id); !st.ok()) return o.error(st.error());
        for (const auto& d : devices_)
            if (d.id == id) return o.error("Duplicate device ID '{}'", id);
    }
    if (driver == "pci-proxy-dev" || driver == "x-pci-proxy-dev") return add_proxy(o, driver);
    if (driver == "lsi53c895a" || driver == "lsi") return add_lsi(o);
    if (driver == "scsi-hd") return add_scsi_hd(o);
    return o.error("'{}' is not a valid device model name", driver);
}

Status Vmm::add_proxy(const opts::Option& o, const std::string& driver) {
#if MPQ_ENABLE_MPQEMU
    static constexpr std::string_view known[] = {"driver", "id", "fd", "socket", "addr", "x-reply-timeout-ms", "x-resample-wait-us", "x-uring", "x-posted-writes", "x-poll-us", "x-reg-mirror"};
    if (auto st = opts::check_known_keys(o.kv, driver, known); !st.ok()) return o.error(st.error());
    std::string id = o.kv.get("id");
    std::string fdtext = o.kv.has("fd") ? o.kv.get("fd") : o.kv.get("socket");
    if (fdtext.empty()) return o.error("fd parameter not specified for {}", id.empty() ? driver : id);
    if (id.empty()) return o.error("{} needs id= (it pairs the device with the remote one)", driver);
    auto fdn = opts::parse_uint(fdtext, o.kv.has("fd") ? "fd" : "socket", 65535);
    if (!fdn.ok()) return o.error(fdn.error());
    int fd = static_cast<int>(*fdn);
    uint32_t timeout = kDefaultReplyTimeoutMs;
    if (o.kv.has("x-reply-timeout-ms")) {
        auto t = opts::parse_uint(o.kv.get("x-reply-timeout-ms"), "x-reply-timeout-ms", 3600000);
        if (!t.ok()) return o.error(t.error());
        timeout = static_cast<uint32_t>(*t);
    }
    ProxyOptions po{id, kDefaultResampleWaitUs};
    if (o.kv.has("x-resample-wait-us")) {
        auto t = opts::parse_uint(o.kv.get("x-resample-wait-us"), "x-resample-wait-us", 10000000);
        if (!t.ok()) return o.error(t.error());
        po.resample_wait_us = static_cast<uint32_t>(*t);
    }
    // x-uring=off: plain sendmsg/recvmsg per access (for comparison runs).
    LinkIo io = LinkIo::Uring;
    if (o.kv.has("x-uring")) {
        auto v = opts::parse_bool(o.kv.get("x-uring"), "x-uring");
        if (!v.ok()) return o.error(v.error());
        if (!*v) io = LinkIo::Syscalls;
    }
    // x-posted-writes=off: every BAR write waits for its RET, as with a stock
    // remote (the first device on a socket decides).
    uint64_t offer = proto::kSupportedFeatures;
    if (o.kv.has("x-posted-writes")) {
        auto v = opts::parse_bool(o.kv.get("x-posted-writes"), "x-posted-writes");
        if (!v.ok()) return o.error(v.error());
        if (!*v) offer &= ~proto::kFeatPostedWrites;
    }
    // x-reg-mirror=off: every register read goes over the socket.
    if (o.kv.has("x-reg-mirror")) {
        auto v = opts::parse_bool(o.kv.get("x-reg-mirror"), "x-reg-mirror");
        if (!v.ok()) return o.error(v.error());
        if (!*v) offer &= ~proto::kFeatRegMirror;
    }
    // x-poll-us: the longest busy-poll for a reply when polling measures
    // faster than sleeping (reply_poll.h); 0 always sleeps.
    uint32_t poll_us = kDefaultPollUs;
    if (o.kv.has("x-poll-us")) {
        auto t = opts::parse_uint(o.kv.get("x-poll-us"), "x-poll-us", 10000);
        if (!t.ok()) return o.error(t.error());
        poll_us = static_cast<uint32_t>(*t);
    }
    std::shared_ptr<ProxyLink> link;
    if (auto it = links_.find(fd); it != links_.end()) {
        link = it->second;
    } else {
        if (fd <= 2 || ::fcntl(fd, F_GETFD) < 0) return o.error("proxy: fd {} is not a socket", fd);
        auto l = ProxyLink::create(UniqueFd(fd), fmt::format("socket {}", fd), timeout, io, offer, poll_us);
        if (!l.ok()) return o.error(l.error());
        link = *l;
        links_[fd] = link;
        std::weak_ptr<ProxyLink> weak = link;
        machine_->add_fence([weak] {
            if (auto p = weak.lock()) p->fence();
        });
    }
    auto devfn = pick_devfn(o);
    if (!devfn.ok()) return devfn.take_error();
    auto dev = std::make_unique<ProxyDevice>(loop_, link, po, &events_);
    if (auto st = dev->realize(machine_->ram()); !st.ok()) return o.error(st.error());
    auto pin = machine_->plug(*devfn, id, dev.get());
    if (!pin.ok()) return o.error(pin.error());
    dev->attach_irq(*pin);
    ProxyDevice* p = dev.get();
    machine_->add_reset_handler([p] { p->device_reset(); });
    devices_.push_back({id, driver, *devfn, p, nullptr});
    proxies_.push_back(std::move(dev));
    return {};
#else
    (void)driver;
    return o.error("this build has no multi-process support (configure --enable-mpqemu)");
#endif
}

Status Vmm::add_lsi(const opts::Option& o) {
    static constexpr std::string_view known[] = {"driver", "id", "addr", "multifunction"};
    if (auto st = opts::check_known_keys(o.kv, "lsi53c895a", known); !st.ok()) return o.error(st.error());
    std::string id = o.kv.get("id");
    auto devfn = pick_devfn(o);
    if (!devfn.ok()) return devfn.take_error();
    auto lsi = hw::make_lsi53c895a(loop_, id);
    auto pin = machine_->plug(*devfn, id, lsi.get());
    if (!pin.ok()) return o.error(pin.error());
    lsi->attach_irq(*pin);
    lsi->attach_dma(&machine_->ram());
    hw::Lsi53c895a* l = lsi.get();
    machine_->add_reset_handler([l] { l->pci_reset(); });
    devices_.push_back({id, "lsi53c895a", *devfn, nullptr, l});
    lsis_.push_back(std::move(lsi));
    return {};
}

Result<block::BlockBackend*> Vmm::backend_for(const opts::Option& o, const std::string& drive_id) {
    if (auto it = backends_.find(drive_id); it != backends_.end()) {
        return o.error("Drive '{}' is already in use by another device", drive_id);
    }
    for (const auto* d : cl_.all("drive")) {
        if (d->kv.get("id") != drive_id) continue;
        std::vector<std::pair<std::string, std::string>> kv;
        for (const auto& item : d->kv.items) {
            if (item.key == "media" && item.value == "disk") continue;
            kv.emplace_back(item.key, item.value);
        }
        auto opts = block::parse_drive_options(kv);
        if (!opts.ok()) return d->error(opts.error());
        auto drv = block::open_drive(*opts);
        if (!drv.ok()) return d->error(drv.error());
        auto be = std::make_unique<block::BlockBackend>(loop_, std::move(*drv), *opts);
        auto* raw = be.get();
        backends_[drive_id] = std::move(be);
        return raw;
    }
    return o.error("Property 'scsi-hd.drive' can't find value '{}'", drive_id);
}

Status Vmm::add_scsi_hd(const opts::Option& o) {
    static constexpr std::string_view known[] = {"driver", "id", "drive", "bus", "scsi-id", "lun", "channel", "serial", "wwn", "vendor", "product", "ver", "logical_block_size", "physical_block_size", "write-cache", "bootindex"};
    if (auto st = opts::check_known_keys(o.kv, "scsi-hd", known); !st.ok()) return o.error(st.error());
    std::string bus = o.kv.get("bus");
    hw::Lsi53c895a* host = nullptr;
    if (bus.empty()) {
        if (!lsis_.empty()) host = lsis_.back().get();
    } else {
        auto dot = bus.rfind('.');
        std::string hid = bus.substr(0, dot);
        if (dot == std::string::npos || bus.substr(dot + 1) != "0") return o.error("Bus '{}' not found", bus);
        for (auto& l : lsis_)
            if (l->id() == hid) host = l.get();
    }
    if (!host) return o.error("Bus '{}' not found", bus.empty() ? "scsi" : bus);
    scsi::ScsiHdProps p;
    p.id = o.kv.get("id");
    unsigned scsi_id = 0;
    if (o.kv.has("scsi-id")) {
        auto v = opts::parse_uint(o.kv.get("scsi-id"), "scsi-id", scsi::kMaxTargets - 1);
        if (!v.ok()) return o.error(v.error());
        scsi_id = static_cast<unsigned>(*v);
    } else {
        while (scsi_id < scsi::kMaxTargets && host->bus().target(scsi_id)) ++scsi_id;
    }
    p.scsi_id = scsi_id;
    if (o.kv.has("lun")) {
        auto v = opts::parse_uint(o.kv.get("lun"), "lun", 0);
        if (!v.ok()) return o.error(v.error());
        p.lun = static_cast<unsigned>(*v);
    }
    if (o.kv.has("serial")) p.serial = o.kv.get("serial");
    if (o.kv.has("vendor")) p.vendor = o.kv.get("vendor");
    if (o.kv.has("product")) p.product = o.kv.get("product");
    if (o.kv.has("ver")) p.ver = o.kv.get("ver");
    if (o.kv.has("wwn")) {
        auto v = opts::parse_uint(o.kv.get("wwn"), "wwn");
        if (!v.ok()) return o.error(v.error());
        p.wwn = *v;
    }
    if (o.kv.has("logical_block_size")) {
        auto v = opts::parse_size(o.kv.get("logical_block_size"), "logical_block_size");
        if (!v.ok()) return o.error(v.error());
        p.logical_block_size = static_cast<uint32_t>(*v);
    }
    if (o.kv.has("write-cache")) {
        auto v = opts::parse_bool(o.kv.get("write-cache"), "write-cache");
        if (!v.ok()) return o.error(v.error());
        p.write_cache = *v ? scsi::WriteCache::On : scsi::WriteCache::Off;
    }
    std::string drive = o.kv.get("drive");
    if (drive.empty()) return o.error("drive property not set");
    auto be = backend_for(o, drive);
    if (!be.ok()) return be.take_error();
    auto dev = scsi::make_scsi_hd(loop_, **be, p);
    if (!dev.ok()) return o.error(dev.error());
    if (!host->bus().attach(scsi_id, dev->get())) {
        return o.error("SCSI id {} is already in use on {}", scsi_id, host->id());
    }
    disks_.push_back(std::move(*dev));
    disk_info_.push_back({drive, p.id, *be});
    return {};
}

Status Vmm::start() {
    machine_->system_reset();
    const opts::Option* q = cl_.last("qtest");
    if (!q) return {};
    auto spec = parse_qtest_chardev(q->text);
    if (!spec.ok()) return spec.take_error();
    qtest_ = std::make_unique<QtestServer>(*machine_);
    // Like QEMU: without -qtest-log the conversation is copied to stderr.
    if (const opts::Option* l = cl_.last("qtest-log")) {
        if (l->text != "none") {
            qtest_log_ = std::fopen(l->text.c_str(), "w");
            if (!qtest_log_) return fail_errno(errno, "-qtest-log {}: {}", l->text, std::strerror(errno));
        }
    } else {
        qtest_log_ = stderr;
    }
    if (qtest_log_) qtest_->set_log(qtest_log_);
    auto chr = QtestChardev::open(loop_, *qtest_, *spec);
    if (!chr.ok()) return chr.take_error();
    qtest_chr_ = std::move(*chr);
    QtestServer* srv = qtest_.get();
    QtestChardev* chp = qtest_chr_.get();
    machine_->set_irq_listener([srv, chp](int line, bool level) {
        srv->irq_event(line, level);
        if (!chp->in_command()) chp->flush();
    });
    return {};
}

void Vmm::system_reset() { machine_->system_reset(); }

void Vmm::quit(int code) { loop_.stop(code); }

}  // namespace mpq::vmm
