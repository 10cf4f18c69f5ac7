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
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "expected a signal number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
#if defined(__linux__)
  int signo = info[0].As<Napi::Number>().Int32Value();
  if (prctl(PR_SET_PDEATHSIG, signo, 0, 0, 0) < 0) {
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
