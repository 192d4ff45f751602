// -sandbox / -run-with values are attacker-typed strings when a management
// layer builds command lines from user input: must give an error, never crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sandbox/sandbox.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view s(reinterpret_cast<const char*>(data), size);
    auto r = mpq::sandbox::parse_option(s);
    if (r.ok()) {
        // Whatever parsed must describe a policy without a hole: execve never
        // comes back unless spawn=allow was given.
        bool has_execve = false;
        for (const auto& e : mpq::sandbox::describe_policy(*r))
            has_execve |= e.name == "execve";
        if (has_execve != (r->spawn == mpq::sandbox::Group::Allow)) __builtin_trap();
    }
    mpq::sandbox::SandboxOptions o;
    (void)mpq::sandbox::parse_run_with(s, o);
    return 0;
}
