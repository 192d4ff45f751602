#include "vmm/vmm.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "block/block.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/proxy.h"
#include "vmm/qtest.h"
#include "vmm/qtest_chardev.h"
#include "vmm/qtest_machine.h"

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
    qtest_target_.reset();
    if (qtest_log_ && qtest_log_ != stderr) std::fclose(qtest_log_);
    if (devset_) {
        // Guest writes already acknowledged must reach the image.
        for (auto& d : devset_->drives()) {
            d.backend->drain();
            if (auto st = d.backend->driver().flush(); !st.ok())
                log::error("drive {}: flush: {}", d.opts.id, st.error().message);
        }
        devset_.reset();
    }
    proxies_.clear();
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
    devset_ = std::make_unique<devices::DeviceSet>(loop_, &machine_->ram(), machine_->timers(),
                                                    static_cast<devices::DevicePlugs&>(*this));
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

    for (const auto* o : cl_.all("drive"))
        if (auto st = devset_->add_drive(o->kv); !st.ok()) return o->error(st.error());
    for (const auto* o : cl_.all("device")) MPQ_TRY(add_device(*o));
    // In-process devices get a PCI reset with the machine (proxies forward
    // their own DEVICE_RESET).
    machine_->add_reset_handler([this] {
        for (const auto& e : devset_->entries())
            if (e->pci) e->pci->pci_reset();
    });

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
        auto a = devices::parse_pci_addr(o.kv.get("addr"));
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
            if (d.id == id) return o.error("Duplicate ID '{}' for device", id);
    }
    // Proxies exist only here; every in-process type comes from the registry.
    if (driver == "pci-proxy-dev" || driver == "x-pci-proxy-dev") return add_proxy(o, driver);
    if (auto e = devset_->add(o.kv); !e.ok()) return o.error(e.error());
    return {};
}

Status Vmm::plug(devices::DeviceEntry& e) {
    int devfn = e.config.props.devfn("addr");
    if (devfn < 0) {
        auto f = machine_->bus().free_devfn();
        if (!f.ok()) return f.take_error();
        devfn = *f;
    }
    auto pin = machine_->plug(devfn, e.named ? e.id : std::string(), e.pci.get());
    if (!pin.ok()) return pin.take_error();
    e.pci->attach_irq(*pin);
    devices_.push_back({e.named ? e.id : std::string(), std::string(e.type->name), devfn, nullptr, e.pci.get()});
    return {};
}

void Vmm::unplug(devices::DeviceEntry& e) {
    e.pci->attach_irq(nullptr);
    machine_->unplug(e.pci.get());
    std::erase_if(devices_, [&](const DeviceInfo& d) { return d.local == e.pci.get(); });
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

Status Vmm::start() {
    machine_->system_reset();
    const opts::Option* q = cl_.last("qtest");
    if (!q) return {};
    auto spec = parse_qtest_chardev(q->text);
    if (!spec.ok()) return spec.take_error();
    // qtest is one driver of the machine: it reaches it through the
    // machine's entry point and listens to its lines like any other.
    qtest_target_ = std::make_unique<QtestMachine>(*machine_, [this](int line, bool level) {
        qtest_->irq_event(line, level);
        if (qtest_chr_ && !qtest_chr_->in_command()) qtest_chr_->flush();
    });
    qtest_ = std::make_unique<QtestServer>(*qtest_target_);
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
    return {};
}

void Vmm::system_reset() { machine_->system_reset(); }

void Vmm::quit(int code) { loop_.stop(code); }

}  // namespace mpq::vmm
