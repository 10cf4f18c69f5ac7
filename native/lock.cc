// lockFile(path) -> fd: an exclusive flock(2) on `path` (created 0600 if
// missing), held until the fd is closed or the process dies, whatever the
// way it dies. Because the kernel releases it only then, a lock that can be
// taken proves its holder is gone, across pid namespaces too, where a pid
// proves nothing: the master holds one in its control directory for life
// (invariant 13). The fd is close-on-exec, so no child inherits the lock.
#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <string>

#include "addon.h"
#include "errors.h"
#include "unique_fd.h"

namespace handover {
namespace {

Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "path must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.empty() || path.find('\0') != std::string::npos) {
    Napi::TypeError::New(env, "path must be a non-empty string without NUL bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) {
    ThrowSystemError(env, errno, "open", path);
    return env.Undefined();
  }
  int rc;
  do {
    rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    ThrowSystemError(env, errno, "flock", path);  // EWOULDBLOCK (EAGAIN): held elsewhere
    return env.Undefined();
  }
  return Napi::Number::New(env, fd.release());
}

}  // namespace

void RegisterLock(Napi::Env env, Napi::Object exports) {
  exports.Set("lockFile", Napi::Function::New(env, LockFile, "lockFile"));
}

}  // namespace handover
