// Process-level calls Node does not offer.
#include <dirent.h>
#include <fcntl.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <vector>

#if defined(__linux__)
#include <sys/prctl.h>
#include <unistd.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
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

#if defined(__linux__)
// What the parent-death handler does; written before the handler is armed,
// read only in it.
volatile sig_atomic_t stopSignalOnParentDeath = SIGTERM;
volatile sig_atomic_t alarmSecondsOnParentDeath = 1;

// The signal the kernel sends when the master dies: a realtime one, so it is
// none that JavaScript can listen to (Node names no realtime signal) and
// libuv never installs its own handler for it. glibc keeps the first two
// realtime signals for itself; SIGRTMIN already skips them.
int ParentDeathSignalNumber() { return SIGRTMIN + 3; }

// Runs in signal context: async-signal-safe calls only. The alarm ends the
// process even when its event loop never turns again (SIGALRM's default
// action terminates; an application's own SIGALRM listener must not keep it
// alive); the stop signal lets JavaScript drain first if the loop does turn.
void OnParentDeath(int) {
  int saved = errno;
  struct sigaction fallback = {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  sigaction(SIGALRM, &fallback, nullptr);
  alarm(static_cast<unsigned>(alarmSecondsOnParentDeath));
  if (stopSignalOnParentDeath != 0) kill(getpid(), stopSignalOnParentDeath);
  errno = saved;
}
#endif

// setParentDeathStop(stopSignal, alarmSeconds) -> true on Linux, false on
// darwin (no PR_SET_PDEATHSIG there; the control socket's EOF is the only
// news of the master's death, and it needs the event loop). On Linux, when
// the parent dies the kernel sends a dedicated realtime signal whose native
// handler arms alarm(alarmSeconds) and raises `stopSignal`: the process
// drains if JavaScript can still run, and ends regardless when the alarm
// fires (invariant 14). stopSignal 0: the alarm only.
Napi::Value SetParentDeathStop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t stopSignal;
  int64_t alarmSeconds;
  if (!ReadInteger(env, info.Length() > 0 ? info[0] : env.Undefined(), 0, 31, "stopSignal", &stopSignal) ||
      !ReadInteger(env, info.Length() > 1 ? info[1] : env.Undefined(), 1, 86400 * 365, "alarmSeconds",
                   &alarmSeconds)) {
    return env.Undefined();
  }
#if defined(__linux__)
  stopSignalOnParentDeath = static_cast<sig_atomic_t>(stopSignal);
  alarmSecondsOnParentDeath = static_cast<sig_atomic_t>(alarmSeconds);
  int signo = ParentDeathSignalNumber();
  struct sigaction action = {};
  action.sa_handler = OnParentDeath;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(signo, &action, nullptr) < 0) {
    ThrowSystemError(env, errno, "sigaction", "SIGRTMIN+3");
    return env.Undefined();
  }
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

// fixMallocThresholds(bytes) -> whether the allocator took them. glibc
// raises its trim threshold to twice the largest block freed so far (and its
// mmap threshold to that block), so each arena may keep that much free memory
// at its top for good; the arenas of V8's helper threads then grow by a few MB
// over thousands of reloads. Fixing both thresholds turns that off: freed
// memory above `bytes` goes back to the kernel. false where the allocator is
// not glibc's.
Napi::Value FixMallocThresholds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t bytes;
  if (!ReadInteger(env, info.Length() > 0 ? info[0] : env.Undefined(), 4096, 32 << 20, "bytes", &bytes)) {
    return env.Undefined();
  }
#if defined(__GLIBC__)
  bool ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(bytes)) == 1 &&
            mallopt(M_MMAP_THRESHOLD, static_cast<int>(bytes)) == 1;
  return Napi::Boolean::New(env, ok);
#else
  return Napi::Boolean::New(env, false);
#endif
}

}  // namespace

void RegisterProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("markCloseOnExec", Napi::Function::New(env, MarkCloseOnExec, "markCloseOnExec"));
  exports.Set("fixMallocThresholds", Napi::Function::New(env, FixMallocThresholds, "fixMallocThresholds"));
  exports.Set("setParentDeathStop", Napi::Function::New(env, SetParentDeathStop, "setParentDeathStop"));
  exports.Set("setParentDeathSignal",
              Napi::Function::New(env, SetParentDeathSignal, "setParentDeathSignal"));
}

}  // namespace handover
