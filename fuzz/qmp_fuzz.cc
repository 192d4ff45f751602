// QMP input from a hostile monitor client: the byte stream goes through the
// session (JSON splitting, capabilities negotiation, argument checks) into
// every registered command, on a fixed fake machine; human-monitor-command
// reaches the HMP parser. The first byte picks how the stream is cut into
// reads (1..256 bytes), so split JSON tokens are covered. Must never crash,
// hang or leak; a dropped client is fine.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../tests/unit/monitor_fake_view.h"
#include "monitor/commands.h"
#include "monitor/hmp.h"
#include "monitor/qmp.h"

using namespace mpq::monitor;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0 || size > 64 * 1024) return 0;
    testing::FakeView view;
    testing::FakeSink sink;
    QmpDispatcher d;
    Hmp hmp(d);
    std::vector<std::function<void()>> deferred;
    CommandEnv env{view, sink, [] { return std::vector<ChardevInfo>{}; },
                   [&](std::function<void()> f) { deferred.push_back(std::move(f)); },
                   [&](const std::string& line) { return hmp.run(line); }};
    register_commands(d, env);
    std::string out;
    QmpSession s(d, (data[0] & 0x80) ? Pretty::On : Pretty::Off,
                 [&](std::string_view b) {
                     // A client that never reads must not make us hoard output.
                     if (out.size() < (1u << 20)) out.append(b);
                 });
    s.start();
    size_t step = 1 + (data[0] & 0x7f) * 2;
    std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    for (size_t pos = 0; pos < in.size(); pos += step) {
        if (!s.feed(in.substr(pos, step))) break;
        for (auto& f : deferred) f();
        deferred.clear();
    }
    return 0;
}
