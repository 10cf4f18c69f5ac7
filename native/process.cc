// Process-level calls Node does not offer.
#include <csignal>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include "addon.h"
#include "errors.h"

namespace handover {
namespace {

// setParentDeathSignal(signo) -> true on Linux (PR_SET_PDEATHSIG), false on
// darwin, which has no equivalent; there the control socket's EOF is the signal.
Napi::Value SetParentDeathSignal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t signo;
  if (!ReadInteger(env, info.Length() > 0 ? info[0] : env.Undefined(), 0, INT32_MAX, "signal", &signo)) {
    return env.Undefined();
  }
#if defined(__linux__)
  if (prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(signo), 0, 0, 0) < 0) {
    ThrowSystemError(env, errno, "prctl", "PR_SET_PDEATHSIG");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
#else
  return Napi::Boolean::New(env, false);
#endif
}

}  // namespace

void RegisterProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("setParentDeathSignal",
              Napi::Function::New(env, SetParentDeathSignal, "setParentDeathSignal"));
}

}  // namespace handover
