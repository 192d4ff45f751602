// HMP, the human monitor: a command line that calls the QMP commands and
// formats their results as QEMU's text monitor does.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "monitor/machine_view.h"
#include "monitor/qmp.h"

namespace mpq::monitor {

class Hmp {
public:
    // `role`: the VMM's `info block` adds where its proxied devices' disks are listed.
    explicit Hmp(const QmpDispatcher& qmp, Role role = Role::Remote) : qmp_(qmp), role_(role) {}
    // Runs one command line; returns its output with "\n" line ends.
    std::string run(std::string_view line) const;

private:
    std::string info(std::string_view what, std::string_view arg) const;
    std::string help(std::string_view what) const;
    // Runs a QMP command; on error returns nullopt-like and fills `err`.
    bool call(std::string_view cmd, const Json& args, Json& out, std::string& err) const;

    const QmpDispatcher& qmp_;
    Role role_;
};

// "\n" -> "\r\n", as QEMU's monitor output does.
std::string to_crlf(std::string_view text);

enum class Echo : uint8_t { Off, On };

// One client's line editor: prompt, echo, backspace, a bounded line.
class HmpSession {
public:
    using Writer = std::function<void(std::string_view)>;
    static constexpr size_t kMaxLine = 4096;

    HmpSession(const Hmp& hmp, Echo echo, Writer write);
    // Banner and first prompt.
    void start();
    // Returns false when the client must be dropped (line too long).
    bool feed(std::string_view bytes);

private:
    void execute();

    const Hmp& hmp_;
    Echo echo_;
    Writer write_;
    std::string line_;
    bool last_cr_ = false;
    enum class Esc : uint8_t { None, Esc, Csi } esc_ = Esc::None;
    unsigned esc_len_ = 0;
};

}  // namespace mpq::monitor
