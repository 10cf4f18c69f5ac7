// Each native concern registers its functions on the module's exports.
#pragma once
#include <napi.h>
#include <sys/socket.h>

#include <vector>

namespace handover {

void RegisterSockets(Napi::Env env, Napi::Object exports);
void RegisterFdPassing(Napi::Env env, Napi::Object exports);
void RegisterCredentials(Napi::Env env, Napi::Object exports);
void RegisterProcess(Napi::Env env, Napi::Object exports);
void RegisterLock(Napi::Env env, Napi::Object exports);

// Creates a socket that is close-on-exec and non-blocking from the start.
int OpenSocket(int domain, int type);

// Reads a JS array of at most 253 (SCM_MAX_FD) fds into `fds`; throws and
// returns false if it is not one.
bool ReadFdList(Napi::Env env, Napi::Value value, std::vector<int>* fds);

// sendmsg of `size` bytes with `fds` attached as SCM_RIGHTS (none if empty),
// to `to` (a datagram's address) or to the connected peer (nullptr);
// EINTR is retried. Returns what sendmsg returns.
ssize_t SendWithFds(int sock, const sockaddr* to, socklen_t toLength, const void* data, size_t size,
                    const std::vector<int>& fds, int flags);

}  // namespace handover
