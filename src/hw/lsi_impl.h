// Internal class of the LSI53C895A model, shared by the files that
// implement it: lsi53c895a.cc (register file, interrupts, resets),
// lsi_scripts.cc (SCRIPTS processor) and lsi_scsi.cc (SCSI phases and
// requests).
#pragma once

#include <list>
#include <memory>
#include <span>
#include <string>

#include "hw/lsi53c895a.h"
#include "hw/lsi_regs.h"
#include "hw/lsi_state.h"
#include "util/work_queue.h"
#include "trace/trace.h"
#include "util/log.h"
#include "util/result.h"

namespace mpq::hw {

// Pause before a yielded activation resumes.
inline constexpr uint64_t kLsiYieldNs = 200'000;
// Requests the controller keeps outstanding (all targets); more get BUSY.
inline constexpr size_t kLsiMaxRequests = 256;
// Message bytes one MSG OUT move interprets; a longer move ends early.
inline constexpr uint32_t kLsiMaxMsgOutBytes = 4096;
// Tag passed to the target for an untagged command.
inline constexpr uint32_t kLsiUntagged = 0x100;

class LsiController final : public Lsi53c895a, public scsi::RequestClient {
public:
    LsiController(WorkQueue& wq, std::string id, LsiTuning tuning);
    ~LsiController() override;

    uint64_t bar_read(int bar, uint64_t off, unsigned size) override;
    void bar_write(int bar, uint64_t off, uint64_t val, unsigned size) override;
    void device_reset() override;
    pci::RegWindow reg_window() const override;
    void reg_window_fill(std::span<uint8_t, pci::kRegWindowSize> image) override;
    unsigned predict_reads(std::span<ReadPrediction, kMaxReadPredictions> out) const override;
    void late_predicted_read(int bar, unsigned offset, uint8_t seen) override;
    scsi::Bus& bus() override { return bus_; }
    const std::string& id() const override { return id_; }
    LsiState save_state() const override { return s_; }
    void restore_state(const LsiState& state) override;
    Result<LsiSnapshot> snapshot() const override;
    Status restore_snapshot(const LsiSnapshot& snap) override;

    void transfer_data(scsi::Request& req, uint32_t len) override;
    void command_complete(scsi::Request& req, scsi::Status status, uint32_t residual) override;

private:
    // A command the controller has handed to a target.
    struct Req {
        std::shared_ptr<scsi::Request> req;
        uint8_t target = 0;
        uint8_t lun = 0;
        bool tagged = false;
        uint8_t tag = 0;
        bool out = false;     // DATA OUT direction
        uint32_t avail = 0;   // bytes of the announced chunk
        uint32_t off = 0;     // bytes of it already moved
        bool completed = false;
        uint8_t status = 0;
    };
    enum class ResetKind : uint8_t { Chip, Restore, PowerOn };

    // ---- register file (lsi53c895a.cc) ----
    uint8_t reg_read(uint8_t off);      // as the bus sees it: traced (lsi_reg_read)
    uint8_t reg_read_raw(uint8_t off);  // the same without a trace line (mirror fill)
    void reg_write(uint8_t off, uint8_t val);
    void update_irq();
    void chip_reset(ResetKind kind);
    void scsi_bus_reset();
    void run_deferred_actions();

    // ---- SCRIPTS processor (lsi_scripts.cc) ----
    void start_scripts();
    void execute();
    void step();
    void stop_scripts();
    void yield_scripts();
    void schedule_resume();
    void script_dma_interrupt(uint8_t dstat_bits);
    void script_scsi_interrupt(uint8_t sist0_bits, uint8_t sist1_bits);
    bool charge(unsigned units);
    void exec_block_move(uint32_t insn, uint32_t arg);
    void exec_io(uint32_t insn, uint32_t arg);
    void exec_rmw(uint32_t insn);
    void exec_transfer(uint32_t insn, uint32_t arg);
    void exec_memory_move(uint32_t insn, uint32_t src);
    void exec_load_store(uint32_t insn, uint32_t arg);
    void finish_block_move();
    // Bus-master access as the chip sees it: its own register window and
    // SCRIPTS RAM are decoded internally (never re-entering the SCRIPTS
    // loop), everything else is DMA into guest memory.
    Status bus_read(uint64_t addr, std::span<uint8_t> out);
    Status bus_write(uint64_t addr, std::span<const uint8_t> in);
    bool read_dword(uint64_t addr, uint32_t* val);
    // The source and destination of memory moves and data-phase block
    // moves: memory, or PCI I/O space when DMODE.SIOM / DIOM say so.
    Status move_read(uint64_t addr, std::span<uint8_t> out);
    Status move_write(uint64_t addr, std::span<const uint8_t> in);

    // ---- SCSI side (lsi_scsi.cc) ----
    void set_phase(lsi::Phase p);
    lsi::Phase phase() const { return static_cast<lsi::Phase>(s_.regs.sstat1 & lsi::kPhaseMask); }
    bool connected() const { return (s_.regs.scntl1 & lsi::kScntl1Con) != 0; }
    void connect();
    void disconnect();
    void bad_selection();
    void exec_select(uint32_t id);
    void wait_disconnect();
    bool wait_reselect_ready();
    void reselect(Req* r);
    Req* pending_request();
    void add_msg_byte(uint8_t b);
    void do_data_move();
    void bad_phase(lsi::Phase next);
    void do_command();
    void do_status();
    void do_msg_in();
    void do_msg_out();
    bool next_msg_byte(uint8_t* b);
    void cancel_request(Req* r);
    void cancel_target(uint8_t target);
    void cancel_all_requests();
    void free_request(Req* r);
    Req* find_req(scsi::Request& req);

    WorkQueue& wq_;
    std::string id_;
    scsi::Bus bus_;
    LsiState s_;

    std::list<std::unique_ptr<Req>> reqs_;  // current + disconnected
    Req* current_ = nullptr;                // connected nexus, if any

    bool in_exec_ = false;           // SCRIPTS loop active: no re-entry
    bool traced_level_ = false;      // INTx level of the last lsi_update_irq line
    bool pending_chip_reset_ = false;
    bool pending_bus_reset_ = false;
    bool resume_scheduled_ = false;
    WorkQueue::TimerId yield_timer_ = 0;
    unsigned budget_ = 0;
    unsigned budget_per_activation_;
    // Read-ahead of MSG OUT bytes (one message move at a time).
    uint8_t msg_buf_[64] = {};
    uint32_t msg_buf_len_ = 0, msg_buf_pos_ = 0;
    bool msg_fault_ = false;
    // The block move in progress, for the RBC/UA bookkeeping at its end.
    uint32_t move_start_ = 0;       // its address (low 32 bits)
    uint32_t move_count_ = 0;       // its byte count
    bool move_mismatched_ = false;  // ended by a phase mismatch
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

// Debug trace of the SCSI flow (not the register path), enabled by the
// environment variable MPQ_LSI_TRACE.
bool lsi_trace_enabled();
#define LSI_TRACE(...)                                      \
    do {                                                    \
        if (::mpq::hw::lsi_trace_enabled()) ::mpq::log::info(__VA_ARGS__); \
    } while (0)

// Register names as QEMU's lsi_reg_read/lsi_reg_write trace lines print them.
const char* lsi_reg_name(unsigned off);
// SCSI phase names of its lsi_execute_script_* trace lines.
const char* lsi_phase_name(unsigned phase);

inline int32_t sext24(uint32_t v) {
    return static_cast<int32_t>(v << 8) >> 8;
}

}  // namespace mpq::hw
