// Process-level calls Node does not offer.
#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/prctl.h>
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

// trimMalloc() -> true if glibc's malloc_trim(0) gave memory back. After a
// full collection the freed blocks are spread through the arenas, below
// their tops, where the trim threshold never reaches; malloc_trim returns
// their whole pages too (madvise). false where the allocator is not glibc's.
Napi::Value TrimMalloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(__GLIBC__)
  return Napi::Boolean::New(env, malloc_trim(0) == 1);
#else
  return Napi::Boolean::New(env, false);
#endif
}

// setCloseOnExec(fd, on): sets or clears FD_CLOEXEC on one fd. An upgrade in
// place clears it on exactly the listening sockets, so they, and nothing
// else, survive the exec.
Napi::Value SetCloseOnExec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  bool on = info.Length() > 1 && info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)) < 0) {
    ThrowSystemError(env, errno, "fcntl", "fd " + std::to_string(fd));
  }
  return env.Undefined();
}

// execve(file, argv[], env[]): replaces this process's image, same pid. Only
// returns by throwing (ENOENT, EACCES, ENOEXEC...): then nothing changed.
// Node 22.15+ has process.execve; Node 20 has only this.
Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsArray()) {
    Napi::TypeError::New(env, "expected (file: string, argv: string[], env: string[])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string file = info[0].As<Napi::String>().Utf8Value();
  auto strings = [](Napi::Array list) {
    std::vector<std::string> out;
    for (uint32_t i = 0; i < list.Length(); i++) out.push_back(list.Get(i).ToString().Utf8Value());
    return out;
  };
  std::vector<std::string> args = strings(info[1].As<Napi::Array>());
  std::vector<std::string> vars = strings(info[2].As<Napi::Array>());
  std::vector<char*> argv;
  std::vector<char*> envp;
  for (auto& a : args) argv.push_back(a.data());
  for (auto& v : vars) envp.push_back(v.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  execve(file.c_str(), argv.data(), envp.data());
  ThrowSystemError(env, errno, "execve", file);
  return env.Undefined();
}

// reapChild(pid) -> { code, signal } once `pid` has exited (and is reaped),
// null while it runs. For children this image did not spawn (a previous image
// of the same pid did): libuv waits only for its own.  ECHILD: not ours, or
// reaped already; reported as exited with no status.
Napi::Value ReapChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t pid;
  if (!ReadInteger(env, info.Length() > 0 ? info[0] : env.Undefined(), 1, INT32_MAX, "pid", &pid)) {
    return env.Undefined();
  }
  int status = 0;
  pid_t got;
  do {
    got = waitpid(static_cast<pid_t>(pid), &status, WNOHANG);
  } while (got < 0 && errno == EINTR);
  if (got == 0) return env.Null();
  Napi::Object result = Napi::Object::New(env);
  if (got < 0) {
    if (errno != ECHILD) {
      ThrowSystemError(env, errno, "waitpid", std::to_string(pid));
      return env.Undefined();
    }
    result.Set("code", env.Null());
    result.Set("signal", env.Null());
    return result;
  }
  result.Set("code", WIFEXITED(status) ? Napi::Number::New(env, WEXITSTATUS(status)) : env.Null());
  result.Set("signal", WIFSIGNALED(status) ? Napi::Number::New(env, WTERMSIG(status)) : env.Null());
  return result;
}

}  // namespace

void RegisterProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("setCloseOnExec", Napi::Function::New(env, SetCloseOnExec, "setCloseOnExec"));
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
  exports.Set("reapChild", Napi::Function::New(env, ReapChild, "reapChild"));
  exports.Set("markCloseOnExec", Napi::Function::New(env, MarkCloseOnExec, "markCloseOnExec"));
  exports.Set("fixMallocThresholds", Napi::Function::New(env, FixMallocThresholds, "fixMallocThresholds"));
  exports.Set("trimMalloc", Napi::Function::New(env, TrimMalloc, "trimMalloc"));
  exports.Set("setParentDeathStop", Napi::Function::New(env, SetParentDeathStop, "setParentDeathStop"));
  exports.Set("setParentDeathSignal",
              Napi::Function::New(env, SetParentDeathSignal, "setParentDeathSignal"));
}

}  // namespace handover
