#include "vmm/machine.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::vmm {

unsigned natural_piece(uint64_t addr, uint64_t len, unsigned max) {
    for (unsigned p = max; p > 1; p >>= 1) {
        if (len >= p && (addr & (p - 1)) == 0) return p;
    }
    return 1;
}

void IntxPin::set_level(bool asserted) {
    if (asserted == level_) return;
    level_ = asserted;
    router_.set_pirq_input(pirq_, asserted);
}

Machine::Machine(EventLoop& loop, std::unique_ptr<GuestRam> ram)
    : loop_(loop), ram_(std::move(ram)), piix3_(irq_) {
    // Fixed functions cannot collide on an empty bus.
    (void)bus_.add(make_devfn(0, 0), "i440fx", &host_bridge_);
    (void)bus_.add(make_devfn(1, 0), "piix3", &piix3_);
    bus_.on_reset_control = [this](uint8_t) { request_reset(); };
    irq_.set_observer([this](int line, bool level) {
        // A listener may remove itself: iterate over a snapshot of the ids.
        std::vector<ListenerId> ids;
        for (auto& l : irq_listeners_) ids.push_back(l.first);
        for (ListenerId id : ids)
            for (auto& l : irq_listeners_)
                if (l.first == id) l.second(line, level);
    });
}

Machine::~Machine() {
    reset_handlers_.clear();
    while (!owned_.empty()) owned_.pop_back();
}

Result<IntxPin*> Machine::plug(int devfn, std::string id, pci::PciFunction* fn) {
    MPQ_TRY(bus_.add(devfn, std::move(id), fn));
    pins_.emplace_back(fn, std::make_unique<IntxPin>(irq_, devfn, 0));
    return pins_.back().second.get();
}

void Machine::unplug(pci::PciFunction* fn) {
    bus_.remove(fn);
    for (auto it = pins_.begin(); it != pins_.end(); ++it) {
        if (it->first != fn) continue;
        it->second->set_level(false);
        pins_.erase(it);
        return;
    }
}

Machine::ListenerId Machine::add_irq_listener(IrqListener fn) {
    ListenerId id = next_listener_++;
    irq_listeners_.emplace_back(id, std::move(fn));
    return id;
}

void Machine::remove_irq_listener(ListenerId id) {
    std::erase_if(irq_listeners_, [id](const auto& l) { return l.first == id; });
}

void MachineTimers::defer(Callback cb) { loop_.defer(std::move(cb)); }

WorkQueue::TimerId MachineTimers::add_timer(uint64_t delay_ns, Callback cb) {
    // The clock counts in int64_t: a deadline past its end never comes.
    const int64_t now = clock_.now();
    const int64_t deadline = delay_ns > static_cast<uint64_t>(INT64_MAX - now)
                                 ? INT64_MAX
                                 : now + static_cast<int64_t>(delay_ns);
    return clock_.add_timer(deadline, std::move(cb));
}

void Machine::system_reset() {
    ++reset_count_;
    host_bridge_.reset();
    piix3_.reset();
    for (auto& h : reset_handlers_) h();
}

void Machine::request_reset() {
    if (reset_pending_) return;
    reset_pending_ = true;
    loop_.defer([this] {
        reset_pending_ = false;
        system_reset();
    });
}

uint32_t Machine::pio_read(uint16_t port, unsigned size) {
    uint32_t v;
    if (bus_.io_read(port, size, &v)) return v;
    uint32_t out = 0;
    unsigned done = 0;
    while (done < size) {
        uint64_t p = uint64_t{port} + done;
        unsigned n = natural_piece(p, size - done, 4);
        uint32_t piece = n == 4 ? 0xffffffffu : (1u << (8 * n)) - 1;  // unassigned: all-ones
        if (p + n <= 0x10000) {
            if (auto d = bus_.decode(pci::AddressSpace::Io, p, n)) {
                piece = static_cast<uint32_t>(d->fn->bar_read(d->hit.bar, d->hit.offset, n));
            }
        }
        out |= piece << (8 * done);
        done += n;
    }
    return out;
}

void Machine::pio_write(uint16_t port, uint32_t val, unsigned size) {
    if (bus_.io_write(port, val, size)) return;
    unsigned done = 0;
    while (done < size) {
        uint64_t p = uint64_t{port} + done;
        unsigned n = natural_piece(p, size - done, 4);
        if (p + n <= 0x10000) {
            if (auto d = bus_.decode(pci::AddressSpace::Io, p, n)) {
                uint64_t piece = (val >> (8 * done)) & (n == 4 ? 0xffffffffull : (1ull << (8 * n)) - 1);
                d->fn->bar_write(d->hit.bar, d->hit.offset, piece, n);
            }
        }
        done += n;
    }
}

uint64_t Machine::mmio_read(uint64_t addr, unsigned size) {
    if (auto d = bus_.decode(pci::AddressSpace::Memory, addr, size)) {
        return d->fn->bar_read(d->hit.bar, d->hit.offset, size);
    }
    return 0;  // unassigned memory reads as zero on x86 QEMU
}

void Machine::mmio_write(uint64_t addr, uint64_t val, unsigned size) {
    if (auto d = bus_.decode(pci::AddressSpace::Memory, addr, size)) {
        d->fn->bar_write(d->hit.bar, d->hit.offset, val, size);
    }
}

void Machine::mem_read(uint64_t addr, std::span<uint8_t> out) {
    bool fenced = false;  // only RAM needs it: a BAR access is ordered on its own socket
    size_t done = 0;
    while (done < out.size()) {
        uint64_t a = addr + done;
        size_t left = out.size() - done;
        if (uint64_t c = ram_->contiguous(a)) {
            if (!std::exchange(fenced, true)) fence();
            size_t n = static_cast<size_t>(std::min<uint64_t>(c, left));
            std::memcpy(out.data() + done, ram_->host(a, n), n);
            done += n;
            continue;
        }
        unsigned n = natural_piece(a, left, 8);
        uint64_t v = mmio_read(a, n);
        std::memcpy(out.data() + done, &v, n);  // little-endian host
        done += n;
    }
}

void Machine::mem_write(uint64_t addr, std::span<const uint8_t> in) {
    bool fenced = false;  // only RAM needs it: a BAR access is ordered on its own socket
    size_t done = 0;
    while (done < in.size()) {
        uint64_t a = addr + done;
        size_t left = in.size() - done;
        if (uint64_t c = ram_->contiguous(a)) {
            if (!std::exchange(fenced, true)) fence();
            size_t n = static_cast<size_t>(std::min<uint64_t>(c, left));
            std::memcpy(ram_->host(a, n), in.data() + done, n);
            done += n;
            continue;
        }
        unsigned n = natural_piece(a, left, 8);
        uint64_t v = 0;
        std::memcpy(&v, in.data() + done, n);
        mmio_write(a, v, n);
        done += n;
    }
}

void Machine::mem_fill(uint64_t addr, uint64_t len, uint8_t byte) {
    bool fenced = false;  // only RAM needs it: a BAR access is ordered on its own socket
    uint64_t done = 0;
    uint8_t chunk[256];
    std::memset(chunk, byte, sizeof chunk);
    while (done < len) {
        uint64_t a = addr + done;
        if (uint64_t c = ram_->contiguous(a)) {
            if (!std::exchange(fenced, true)) fence();
            uint64_t n = std::min(c, len - done);
            std::memset(ram_->host(a, n), byte, n);
            done += n;
            continue;
        }
        uint64_t n = std::min<uint64_t>(sizeof chunk, len - done);
        // Stop at the next RAM byte so that it takes the fast path.
        for (uint64_t i = 1; i < n; ++i) {
            if (ram_->contiguous(a + i)) {
                n = i;
                break;
            }
        }
        mem_write(a, std::span<const uint8_t>(chunk, n));
        done += n;
    }
}

}  // namespace mpq::vmm
