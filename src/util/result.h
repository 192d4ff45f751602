// Errors as values: anything a peer, a guest, an image or a user can cause is
// reported through Result<T> instead of an exception or an assertion.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace mpq {

struct Error {
    std::string message;
    int err = 0;  // errno when the error came from the OS, else 0
};

// Builds an Error from a format string: return mpq::fail("bad size {}", n);
template <typename... Args>
Error fail(fmt::format_string<Args...> f, Args&&... args) {
    return Error{fmt::format(f, std::forward<Args>(args)...), 0};
}
template <typename... Args>
Error fail_errno(int err, fmt::format_string<Args...> f, Args&&... args) {
    return Error{fmt::format(f, std::forward<Args>(args)...), err};
}

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T v) : v_(std::move(v)) {}
    Result(Error e) : v_(std::move(e)) {}
    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { assert(ok()); return std::get<0>(v_); }
    const T& value() const& { assert(ok()); return std::get<0>(v_); }
    T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const Error& error() const { assert(!ok()); return std::get<1>(v_); }
    Error&& take_error() { assert(!ok()); return std::get<1>(std::move(v_)); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error e) : e_(std::move(e)), ok_(false) {}
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { assert(!ok_); return e_; }
    Error&& take_error() { assert(!ok_); return std::move(e_); }

private:
    Error e_;
    bool ok_ = true;
};

using Status = Result<void>;

}  // namespace mpq

// Propagates an error from an expression returning Result<...>.
#define MPQ_TRY(expr)                                   \
    do {                                                \
        auto mpq_try_r_ = (expr);                       \
        if (!mpq_try_r_.ok()) return mpq_try_r_.take_error(); \
    } while (0)
