// Process-level calls Node does not offer.
#include <dirent.h>
#include <fcntl.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <vector>

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

// markCloseOnExec(minFd) -> how many fds it changed. Sets FD_CLOEXEC on every
// open fd >= minFd, so fds this process inherited (from a supervisor, a shell's
// `exec 9>lock`, a careless parent) never reach the workers it spawns.
Napi::Value MarkCloseOnExec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t minFd;
  if (!ReadInteger(env, info.Length() > 0 ? info[0] : env.Undefined(), 0, INT32_MAX, "minFd", &minFd)) {
    return env.Undefined();
  }
#if defined(__linux__)
  const char* listing = "/proc/self/fd";
#else
  const char* listing = "/dev/fd";
#endif
  DIR* dir = opendir(listing);
  if (dir == nullptr) {
    ThrowSystemError(env, errno, "opendir", listing);
    return env.Undefined();
  }
  std::vector<int> fds;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end != entry->d_name && *end == '\0' && fd >= minFd && fd != dirfd(dir)) fds.push_back(static_cast<int>(fd));
  }
  closedir(dir);
  int changed = 0;
  for (int fd : fds) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0) changed++;
  }
  return Napi::Number::New(env, changed);
}

}  // namespace

void RegisterProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("markCloseOnExec", Napi::Function::New(env, MarkCloseOnExec, "markCloseOnExec"));
  exports.Set("setParentDeathSignal",
              Napi::Function::New(env, SetParentDeathSignal, "setParentDeathSignal"));
}

}  // namespace handover
