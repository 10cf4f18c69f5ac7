// Credentials of the process at the other end of a connected Unix socket.
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "errors.h"

namespace handover {
namespace {

// peerCredentials(fd) -> {pid, uid, gid}
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  double pid, uid, gid;
#if defined(__linux__)
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    ThrowSystemError(env, errno, "getsockopt", "SO_PEERCRED fd " + std::to_string(fd));
    return env.Undefined();
  }
  pid = cred.pid;
  uid = cred.uid;
  gid = cred.gid;
#elif defined(__APPLE__)
  uid_t u;
  gid_t g;
  if (getpeereid(fd, &u, &g) < 0) {
    ThrowSystemError(env, errno, "getpeereid", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  pid_t p = 0;
  socklen_t len = sizeof(p);
  if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &p, &len) < 0) {
    ThrowSystemError(env, errno, "getsockopt", "LOCAL_PEERPID fd " + std::to_string(fd));
    return env.Undefined();
  }
  pid = p;
  uid = u;
  gid = g;
#else
#error "handover supports linux and darwin only"
#endif
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", pid);
  out.Set("uid", uid);
  out.Set("gid", gid);
  return out;
}

}  // namespace

void RegisterCredentials(Napi::Env env, Napi::Object exports) {
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
}

}  // namespace handover
