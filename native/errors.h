// Node-style system errors: `code` is the errno name, `errno` is negative as in
// Node's own errors, `syscall` names the call, and the message names the
// address or path the call was about: "bind EADDRINUSE 127.0.0.1:9222 (...)".
#pragma once
#include <napi.h>
#include <string>

namespace handover {

Napi::Error SystemError(Napi::Env env, int err, const char* syscall,
                        const std::string& subject);

// Throws the error as a pending JS exception; callers return right after.
void ThrowSystemError(Napi::Env env, int err, const char* syscall,
                      const std::string& subject);

// Reads an integer fd argument; throws a TypeError and returns -1 if invalid.
int FdArg(const Napi::CallbackInfo& info, size_t index);

// Reads `value` as an integer in [min, max] into `out`. A non-number, a
// fraction, NaN, an infinity or anything out of range throws a RangeError
// naming `what` and returns false: nothing is silently wrapped or truncated.
bool ReadInteger(Napi::Env env, Napi::Value value, double min, double max,
                 const char* what, int64_t* out);

}  // namespace handover
