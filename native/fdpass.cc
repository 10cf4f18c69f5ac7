// Passing fds over a connected Unix stream socket with SCM_RIGHTS.
// Sending never waits (the caller retries on EAGAIN). Receiving waits on the
// non-blocking fd with a uv_poll on this env's loop plus a uv_timer, so the
// event loop keeps running and every wait has a timeout.
#include <fcntl.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "unique_fd.h"

namespace handover {
namespace {

constexpr int kMaxFdsPerMessage = 253;  // SCM_MAX_FD on Linux

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL | MSG_DONTWAIT;
#else
constexpr int kSendFlags = MSG_DONTWAIT;  // darwin: SIGPIPE is ignored by Node
#endif

#ifdef MSG_CMSG_CLOEXEC
constexpr int kRecvFlags = MSG_CMSG_CLOEXEC | MSG_DONTWAIT;
#else
constexpr int kRecvFlags = MSG_DONTWAIT;
#endif

}  // namespace

bool ReadFdList(Napi::Env env, Napi::Value value, std::vector<int>* fds) {
  Napi::Array list = value.As<Napi::Array>();
  if (list.Length() > static_cast<uint32_t>(kMaxFdsPerMessage)) {
    Napi::RangeError::New(env, "too many fds in one message").ThrowAsJavaScriptException();
    return false;
  }
  for (uint32_t i = 0; i < list.Length(); i++) {
    int64_t fd;
    if (!ReadInteger(env, list.Get(i), 0, INT32_MAX, "each fd", &fd)) return false;
    fds->push_back(static_cast<int>(fd));
  }
  return true;
}

ssize_t SendWithFds(int sock, const sockaddr* to, socklen_t toLength, const void* data, size_t size,
                    const std::vector<int>& fds, int flags) {
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(to);
  msg.msg_namelen = to == nullptr ? 0 : toLength;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, flags);
  } while (n < 0 && errno == EINTR);
  return n;
}

namespace {

// sendFds(socketFd, data: Buffer, fds: number[]) -> bytes written.
// The fds travel with the first byte; a short write returns fewer bytes and the
// caller sends the rest without fds. Throws EAGAIN when nothing could be written.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = FdArg(info, 0);
  if (sock < 0) return env.Undefined();
  if (info.Length() < 3 || !info[1].IsBuffer() || !info[2].IsArray()) {
    Napi::TypeError::New(env, "expected (fd, data: Buffer, fds: number[])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto data = info[1].As<Napi::Buffer<uint8_t>>();
  if (data.Length() == 0) {
    Napi::TypeError::New(env, "at least one data byte must accompany the fds").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<int> fds;
  if (!ReadFdList(env, info[2], &fds)) return env.Undefined();
  ssize_t n = SendWithFds(sock, nullptr, 0, data.Data(), data.Length(), fds, kSendFlags);
  if (n < 0) {
    ThrowSystemError(env, errno, "sendmsg", "fd " + std::to_string(sock));
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// One pending recvFds call. Owns its uv handles; deletes itself once both closed.
class Receive {
 public:
  Receive(Napi::Env env, int fd, size_t maxBytes, size_t maxFds, uint64_t timeoutMs)
      : env_(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        context_(env, "handover.recvFds"),
        fd_(fd),
        maxBytes_(maxBytes),
        maxFds_(maxFds),
        timeoutMs_(timeoutMs) {
    poll_.data = this;
    timer_.data = this;
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  // Settles at once if a message is already there; otherwise starts waiting.
  void Start() {
    if (TryReceive()) {
      delete this;
      return;
    }
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    int rc = uv_poll_init(loop, &poll_, fd_);
    if (rc != 0) {
      deferred_.Reject(SystemError(env_, -rc, "recvmsg", "fd " + std::to_string(fd_)).Value());
      delete this;
      return;
    }
    uv_timer_init(loop, &timer_);
    uv_poll_start(&poll_, UV_READABLE | UV_DISCONNECT, OnReadable);
    uv_timer_start(&timer_, OnTimeout, timeoutMs_, 0);
    napi_add_env_cleanup_hook(env_, OnEnvTeardown, this);
    waiting_ = true;
  }

 private:
  static void OnReadable(uv_poll_t* handle, int status, int) {
    auto* self = static_cast<Receive*>(handle->data);
    Napi::HandleScope scope(self->env_);
    Napi::CallbackScope callbackScope(self->env_, self->context_);
    if (status < 0) {
      self->deferred_.Reject(SystemError(self->env_, -status, "recvmsg",
                                         "fd " + std::to_string(self->fd_)).Value());
      self->Finish();
    } else if (self->TryReceive()) {
      self->Finish();
    }
  }

  static void OnTimeout(uv_timer_t* handle) {
    auto* self = static_cast<Receive*>(handle->data);
    Napi::HandleScope scope(self->env_);
    Napi::CallbackScope callbackScope(self->env_, self->context_);
    self->deferred_.Reject(SystemError(self->env_, ETIMEDOUT, "recvmsg",
                                       "fd " + std::to_string(self->fd_) + " after " +
                                           std::to_string(self->timeoutMs_) + " ms")
                               .Value());
    self->Finish();
  }

  static void OnEnvTeardown(void* arg) {
    auto* self = static_cast<Receive*>(arg);
    self->tornDown_ = true;
    self->Finish();
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* self = static_cast<Receive*>(handle->data);
    if (++self->closed_ == 2) delete self;
  }

  void Finish() {
    if (!waiting_) return;
    waiting_ = false;
    if (!tornDown_) napi_remove_env_cleanup_hook(env_, OnEnvTeardown, this);
    uv_poll_stop(&poll_);
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnClosed);
  }

  // One recvmsg. Returns true when the promise was settled, false on EAGAIN.
  bool TryReceive() {
    std::vector<uint8_t> buffer(maxBytes_);
    // Room for more fds than allowed, so a sender that exceeds the limit is
    // seen (and its surplus closed) rather than silently truncated.
    std::vector<char> control(CMSG_SPACE(sizeof(int) * (maxFds_ + 1)) + CMSG_SPACE(0), 0);
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n;
    do {
      n = recvmsg(fd_, &msg, kRecvFlags);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      deferred_.Reject(SystemError(env_, errno, "recvmsg", "fd " + std::to_string(fd_)).Value());
      return true;
    }

    std::vector<UniqueFd> received;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* p = CMSG_DATA(c);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, p + i * sizeof(int), sizeof(int));
        received.emplace_back(fd);
#ifndef MSG_CMSG_CLOEXEC
        fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      size_t count = received.size();
      received.clear();  // closes every fd that did arrive
      deferred_.Reject(SystemError(env_, EMSGSIZE, "recvmsg",
                                   "fd " + std::to_string(fd_) +
                                       ": control message truncated (MSG_CTRUNC); closed " +
                                       std::to_string(count) + " received fds")
                           .Value());
      return true;
    }
    size_t surplus = received.size() > maxFds_ ? received.size() - maxFds_ : 0;
    if (surplus > 0) received.resize(maxFds_);  // closes the fds beyond the limit

    Napi::Object result = Napi::Object::New(env_);
    result.Set("data", Napi::Buffer<uint8_t>::Copy(env_, buffer.data(), static_cast<size_t>(n)));
    Napi::Array fds = Napi::Array::New(env_, received.size());
    for (size_t i = 0; i < received.size(); i++) fds.Set(static_cast<uint32_t>(i), received[i].release());
    result.Set("fds", fds);
    result.Set("surplusClosed", Napi::Number::New(env_, static_cast<double>(surplus)));
    deferred_.Resolve(result);
    return true;
  }

  Napi::Env env_;
  Napi::Promise::Deferred deferred_;
  Napi::AsyncContext context_;
  int fd_;
  size_t maxBytes_;
  size_t maxFds_;
  uint64_t timeoutMs_;
  uv_poll_t poll_{};
  uv_timer_t timer_{};
  bool waiting_ = false;
  bool tornDown_ = false;
  int closed_ = 0;
};

// recvFds(socketFd, maxBytes, maxFds, timeoutMs) ->
//   Promise<{data: Buffer, fds: number[], surplusClosed: number}>
// An empty `data` means the peer closed the connection (EOF).
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  // The timeout is capped at a day: every wait has a real one (invariant 10).
  int64_t maxBytes, maxFds, timeoutMs;
  if (!ReadInteger(env, info.Length() > 1 ? info[1] : env.Undefined(), 1, 16 * 1024 * 1024, "maxBytes", &maxBytes) ||
      !ReadInteger(env, info.Length() > 2 ? info[2] : env.Undefined(), 0, kMaxFdsPerMessage, "maxFds", &maxFds) ||
      !ReadInteger(env, info.Length() > 3 ? info[3] : env.Undefined(), 0, 86400000, "timeoutMs", &timeoutMs)) {
    return env.Undefined();
  }
  auto* receive = new Receive(env, fd, static_cast<size_t>(maxBytes), static_cast<size_t>(maxFds),
                              static_cast<uint64_t>(timeoutMs));
  Napi::Promise promise = receive->Promise();
  receive->Start();
  return promise;
}

}  // namespace

void RegisterFdPassing(Napi::Env env, Napi::Object exports) {
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
}

}  // namespace handover
