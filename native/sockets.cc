// Listening sockets (TCP and Unix), their bound address, dup/close, a
// non-blocking Unix connect, Unix datagrams (sd_notify), one small write
// that goes out whole or not at all, and what a stop needs from a listening
// socket: refuse new handshakes, read the accept queue's length, shut it down.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#endif

#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "unique_fd.h"

namespace handover {
namespace {

struct TcpTarget {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = 0;
  std::string label;  // "127.0.0.1:9222" or "[::1]:443", for error messages
};

// Fills `target` from a numeric host; returns false after throwing.
bool ParseTcpTarget(Napi::Env env, const std::string& host, int port,
                    TcpTarget* target) {
  target->label = host.find(':') != std::string::npos
                      ? "[" + host + "]:" + std::to_string(port)
                      : host + ":" + std::to_string(port);
  if (port < 0 || port > 65535) {
    ThrowSystemError(env, EINVAL, "bind", target->label);
    return false;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&target->addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&target->addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    target->len = sizeof(sockaddr_in);
    target->family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    target->len = sizeof(sockaddr_in6);
    target->family = AF_INET6;
  } else {
    ThrowSystemError(env, EINVAL, "bind",
                     target->label + " is not a numeric IPv4/IPv6 address");
    return false;
  }
  return true;
}

// Reads {host, port, backlog, reusePort, ipv6Only} from the options object.
struct TcpOptions {
  std::string host;
  int port = 0;
  int backlog = 511;
  bool reusePort = false;
  bool ipv6Only = false;
  bool listen = true;
};

bool ReadTcpOptions(const Napi::CallbackInfo& info, TcpOptions* out) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "expected an options object")
        .ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  if (!o.Get("host").IsString()) {
    Napi::TypeError::New(env, "options.host (string) is required").ThrowAsJavaScriptException();
    return false;
  }
  out->host = o.Get("host").As<Napi::String>().Utf8Value();
  int64_t port, backlog = out->backlog;
  if (!ReadInteger(env, o.Get("port"), 0, 65535, "options.port", &port)) return false;
  if (!o.Get("backlog").IsUndefined() &&
      !ReadInteger(env, o.Get("backlog"), 1, INT32_MAX, "options.backlog", &backlog)) {
    return false;
  }
  out->port = static_cast<int>(port);
  out->backlog = static_cast<int>(backlog);
  out->reusePort = o.Get("reusePort").ToBoolean().Value();
  out->ipv6Only = o.Get("ipv6Only").ToBoolean().Value();
  if (!o.Get("listen").IsUndefined()) out->listen = o.Get("listen").ToBoolean().Value();
  return true;
}

// socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind; returns an invalid fd after
// throwing. `listen` is left to the caller so a probe can skip it.
UniqueFd BindTcp(Napi::Env env, const TcpOptions& opts, TcpTarget* target) {
  if (!ParseTcpTarget(env, opts.host, opts.port, target)) return UniqueFd();
  UniqueFd fd(OpenSocket(target->family, SOCK_STREAM));
  if (!fd.valid()) {
    ThrowSystemError(env, errno, "socket", target->label);
    return UniqueFd();
  }
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
    ThrowSystemError(env, errno, "setsockopt", target->label + " SO_REUSEADDR");
    return UniqueFd();
  }
  if (opts.reusePort &&
      setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
    ThrowSystemError(env, errno, "setsockopt", target->label + " SO_REUSEPORT");
    return UniqueFd();
  }
  if (target->family == AF_INET6) {
    int v6only = opts.ipv6Only ? 1 : 0;
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0) {
      ThrowSystemError(env, errno, "setsockopt", target->label + " IPV6_V6ONLY");
      return UniqueFd();
    }
  }
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&target->addr), target->len) < 0) {
    ThrowSystemError(env, errno, "bind", target->label);
    return UniqueFd();
  }
  return fd;
}

// bindTcp({host, port, backlog?, reusePort?, ipv6Only?, listen?}) -> fd.
// `listen: false` binds only: a socket of a SO_REUSEPORT group takes no
// connection until someone calls listen(2) on it (the worker that serves it).
Napi::Value BindTcpListener(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcpOptions opts;
  if (!ReadTcpOptions(info, &opts)) return env.Undefined();
  TcpTarget target;
  UniqueFd fd = BindTcp(env, opts, &target);
  if (!fd.valid()) return env.Undefined();
  if (opts.listen && listen(fd.get(), opts.backlog) < 0) {
    ThrowSystemError(env, errno, "listen", target.label);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd.release());
}

// probeTcp({host, port, ipv6Only?}) -> undefined, or throws EADDRINUSE when a
// socket already listens there. Binds without SO_REUSEPORT and never listens,
// so no client connection can land on the probe.
Napi::Value ProbeTcp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcpOptions opts;
  if (!ReadTcpOptions(info, &opts)) return env.Undefined();
  opts.reusePort = false;
  TcpTarget target;
  BindTcp(env, opts, &target);  // closes at once; throws on failure
  return env.Undefined();
}

bool FillUnixAddress(Napi::Env env, const std::string& path, const char* syscall,
                     sockaddr_un* addr, socklen_t* len) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty()) {
    ThrowSystemError(env, EINVAL, syscall, "(empty Unix socket path)");
    return false;
  }
  if (path.size() >= sizeof(addr->sun_path)) {
    ThrowSystemError(env, ENAMETOOLONG, syscall,
                     path + " (a Unix socket path holds at most " +
                         std::to_string(sizeof(addr->sun_path) - 1) + " bytes)");
    return false;
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  if (path[0] == '@') addr->sun_path[0] = '\0';  // Linux abstract namespace
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                (path[0] == '@' ? 0 : 1));
  return true;
}

// bindUnix({path, backlog?, mode?}) -> fd. The caller removes a stale file first.
Napi::Value BindUnixListener(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() ||
      !info[0].As<Napi::Object>().Get("path").IsString()) {
    Napi::TypeError::New(env, "options.path (string) is required").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  std::string path = o.Get("path").As<Napi::String>().Utf8Value();
  int64_t backlog = 511, mode = -1;
  if (!o.Get("backlog").IsUndefined() &&
      !ReadInteger(env, o.Get("backlog"), 1, INT32_MAX, "options.backlog", &backlog)) {
    return env.Undefined();
  }
  if (!o.Get("mode").IsUndefined() && !ReadInteger(env, o.Get("mode"), 0, 07777, "options.mode", &mode)) {
    return env.Undefined();
  }

  sockaddr_un addr;
  socklen_t len;
  if (!FillUnixAddress(env, path, "bind", &addr, &len)) return env.Undefined();
  UniqueFd fd(OpenSocket(AF_UNIX, SOCK_STREAM));
  if (!fd.valid()) {
    ThrowSystemError(env, errno, "socket", path);
    return env.Undefined();
  }
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0) {
    ThrowSystemError(env, errno, "bind", path);
    return env.Undefined();
  }
  bool onDisk = path[0] != '@';
  if (onDisk && mode >= 0 && chmod(path.c_str(), static_cast<mode_t>(mode)) < 0) {
    int err = errno;
    unlink(path.c_str());
    ThrowSystemError(env, err, "chmod", path);
    return env.Undefined();
  }
  if (listen(fd.get(), static_cast<int>(backlog)) < 0) {
    int err = errno;
    if (onDisk) unlink(path.c_str());
    ThrowSystemError(env, err, "listen", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd.release());
}

// connectUnix(path) -> fd of a connected, non-blocking, close-on-exec socket.
// A Unix connect never waits for a handshake: it succeeds or fails at once
// (EAGAIN when the listener's backlog is full; the caller retries).
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "expected a socket path").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  socklen_t len;
  if (!FillUnixAddress(env, path, "connect", &addr, &len)) return env.Undefined();
  UniqueFd fd(OpenSocket(AF_UNIX, SOCK_STREAM));
  if (!fd.valid()) {
    ThrowSystemError(env, errno, "socket", path);
    return env.Undefined();
  }
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0) {
    ThrowSystemError(env, errno, "connect", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd.release());
}

// localAddress(fd) -> {family: 'IPv4'|'IPv6', address, port} | {family: 'unix', path}
Napi::Value LocalAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    ThrowSystemError(env, errno, "getsockname", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  char text[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    out.Set("family", "IPv4");
    out.Set("address", text);
    out.Set("port", ntohs(v4->sin_port));
  } else if (addr.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    out.Set("family", "IPv6");
    out.Set("address", text);
    out.Set("port", ntohs(v6->sin6_port));
  } else if (addr.ss_family == AF_UNIX) {
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    std::string path(un->sun_path, n);
    if (!path.empty() && path[0] == '\0') {
      path[0] = '@';
    } else {
      path = std::string(path.c_str());  // drop the trailing NUL
    }
    out.Set("family", "unix");
    out.Set("path", path);
  } else {
    ThrowSystemError(env, EAFNOSUPPORT, "getsockname", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  return out;
}

// dup(fd) -> a close-on-exec duplicate (F_DUPFD_CLOEXEC).
Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    ThrowSystemError(env, errno, "dup", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  return Napi::Number::New(env, copy);
}

// close(fd). EINTR still released the fd on Linux and darwin: not retried.
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  if (close(fd) < 0 && errno != EINTR) {
    ThrowSystemError(env, errno, "close", "fd " + std::to_string(fd));
  }
  return env.Undefined();
}

// refuseNewConnections(fd) -> true if attached (Linux, TCP). A classic BPF
// socket filter that drops every segment with SYN set and ACK clear: no new
// handshake starts on the socket (the client retries its SYN later, by when
// the socket is closed and it gets ECONNREFUSED), while handshakes already
// under way complete and queued connections stay to be accepted. Needs no
// privilege. Every socket of a SO_REUSEPORT group needs its own filter.
Napi::Value RefuseNewConnections(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
#ifdef __linux__
  // The program sees the TCP header at offset 0; byte 13 holds the flags.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),  // SYN | ACK
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),           // a new SYN: dropped
      BPF_STMT(BPF_RET | BPF_K, 0xffffffff),  // anything else: kept whole
  };
  sock_fprog program{static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) < 0) {
    ThrowSystemError(env, errno, "setsockopt", "fd " + std::to_string(fd) + " SO_ATTACH_FILTER");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
#else
  return Napi::Boolean::New(env, false);
#endif
}

// allowNewConnections(fd): takes refuseNewConnections' filter off again
// (SO_DETACH_FILTER), so the socket takes new handshakes once it listens
// again. No filter attached is not an error.
Napi::Value AllowNewConnections(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
#ifdef __linux__
  int unused = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof(unused)) < 0 && errno != ENOENT) {
    ThrowSystemError(env, errno, "setsockopt", "fd " + std::to_string(fd) + " SO_DETACH_FILTER");
  }
#endif
  return env.Undefined();
}

// acceptQueueLength(fd) -> connections waiting to be accepted on a listening
// TCP socket (TCP_INFO's tcpi_unacked, what `ss -lnt` shows as Recv-Q), or -1
// where the platform cannot tell.
Napi::Value AcceptQueueLength(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
#ifdef __linux__
  tcp_info tcp{};
  socklen_t len = sizeof(tcp);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &tcp, &len) < 0) {
    ThrowSystemError(env, errno, "getsockopt", "fd " + std::to_string(fd) + " TCP_INFO");
    return env.Undefined();
  }
  if (tcp.tcpi_state != TCP_LISTEN) return Napi::Number::New(env, 0);
  return Napi::Number::New(env, tcp.tcpi_unacked);
#else
  return Napi::Number::New(env, -1);
#endif
}

// shutdownSocket(fd, direction): shutdown(2) on any socket; it acts on the
// socket, not the fd, so on every copy in every process. 'both' (SHUT_RDWR)
// on a listening socket: every process holding a copy stops accepting, and
// new connections are refused at once (Linux: ECONNREFUSED for TCP and Unix).
// 'write' (SHUT_WR) on a connected one: the peer reads end of file after the
// last byte sent, and this side can still read. ENOTCONN (darwin, or not
// listening or connected) is not an error.
Napi::Value ShutdownSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  std::string direction = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  if (direction != "both" && direction != "write") {
    Napi::TypeError::New(env, "expected (fd: number, direction: 'both' | 'write')").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (shutdown(fd, direction == "write" ? SHUT_WR : SHUT_RDWR) < 0 && errno != ENOTCONN) {
    ThrowSystemError(env, errno, "shutdown", "fd " + std::to_string(fd));
  }
  return env.Undefined();
}

// sendDatagram(path, data, fds?): one Unix datagram to a path or '@abstract'
// name, with `fds` attached (SCM_RIGHTS) if given.
Napi::Value SendDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsBuffer() ||
      (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsArray())) {
    Napi::TypeError::New(env, "expected (path: string, data: Buffer, fds?: number[])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto data = info[1].As<Napi::Buffer<uint8_t>>();
  std::vector<int> fds;
  if (info.Length() > 2 && info[2].IsArray() && !ReadFdList(env, info[2], &fds)) return env.Undefined();
  sockaddr_un addr;
  socklen_t len;
  if (!FillUnixAddress(env, path, "sendmsg", &addr, &len)) return env.Undefined();
  UniqueFd fd(OpenSocket(AF_UNIX, SOCK_DGRAM));
  if (!fd.valid()) {
    ThrowSystemError(env, errno, "socket", path);
    return env.Undefined();
  }
  // sd_pid_notify_with_fds: the fds ride on the datagram as SCM_RIGHTS.
  if (SendWithFds(fd.get(), reinterpret_cast<sockaddr*>(&addr), len, data.Data(), data.Length(), fds, 0) < 0) {
    ThrowSystemError(env, errno, "sendmsg", path);
  }
  return env.Undefined();
}

// sendWhole(fd, data) -> boolean: writes all of a small `data` on a connected
// TCP socket now, or nothing (false). It puts one frame between two whole
// writes of another writer on the same thread (Node's HTTP/2 session), so it
// writes only when the kernel holds no unsent byte: then the data starts a
// new segment and the send is all or nothing. False also when the send buffer
// is full, and on platforms without SIOCOUTQNSD. The remainder of a short
// send, which that rule should make impossible, is finished by waiting up to
// a second rather than leaving half a frame on the wire.
Napi::Value SendWhole(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (fd < 0) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsBuffer()) {
    Napi::TypeError::New(env, "expected (fd: number, data: Buffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto data = info[1].As<Napi::Buffer<uint8_t>>();
  const std::string what = "fd " + std::to_string(fd);
#ifdef SIOCOUTQNSD
  int unsent = 0;
  if (ioctl(fd, SIOCOUTQNSD, &unsent) < 0) {
    ThrowSystemError(env, errno, "ioctl", what);
    return env.Undefined();
  }
  if (unsent != 0) return Napi::Boolean::New(env, false);
  size_t done = 0;
  while (done < data.Length()) {
    ssize_t n = send(fd, data.Data() + done, data.Length() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && done == 0) return Napi::Boolean::New(env, false);
    pollfd writable{fd, POLLOUT, 0};
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && poll(&writable, 1, 1000) > 0) continue;
    ThrowSystemError(env, errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno, "send", what);
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
#else
  (void)data;
  return Napi::Boolean::New(env, false);
#endif
}

}  // namespace

void RegisterSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("bindTcp", Napi::Function::New(env, BindTcpListener, "bindTcp"));
  exports.Set("probeTcp", Napi::Function::New(env, ProbeTcp, "probeTcp"));
  exports.Set("bindUnix", Napi::Function::New(env, BindUnixListener, "bindUnix"));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("refuseNewConnections", Napi::Function::New(env, RefuseNewConnections, "refuseNewConnections"));
  exports.Set("allowNewConnections", Napi::Function::New(env, AllowNewConnections, "allowNewConnections"));
  exports.Set("acceptQueueLength", Napi::Function::New(env, AcceptQueueLength, "acceptQueueLength"));
  exports.Set("shutdownSocket", Napi::Function::New(env, ShutdownSocket, "shutdownSocket"));
  exports.Set("localAddress", Napi::Function::New(env, LocalAddress, "localAddress"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("sendDatagram", Napi::Function::New(env, SendDatagram, "sendDatagram"));
  exports.Set("sendWhole", Napi::Function::New(env, SendWhole, "sendWhole"));
}

}  // namespace handover
