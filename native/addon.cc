#include "addon.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace handover {

int OpenSocket(int domain, int type) {
#ifdef SOCK_CLOEXEC
  return ::socket(domain, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
  int fd = ::socket(domain, type, 0);
  if (fd < 0) return -1;
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
#endif
}

}  // namespace handover

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  handover::RegisterSockets(env, exports);
  handover::RegisterFdPassing(env, exports);
  handover::RegisterCredentials(env, exports);
  handover::RegisterProcess(env, exports);
  handover::RegisterLock(env, exports);
  return exports;
}

NODE_API_MODULE(handover, Init)
