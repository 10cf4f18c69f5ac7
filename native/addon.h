// Each native concern registers its functions on the module's exports.
#pragma once
#include <napi.h>

namespace handover {

void RegisterSockets(Napi::Env env, Napi::Object exports);
void RegisterFdPassing(Napi::Env env, Napi::Object exports);
void RegisterCredentials(Napi::Env env, Napi::Object exports);
void RegisterProcess(Napi::Env env, Napi::Object exports);
void RegisterLock(Napi::Env env, Napi::Object exports);

// Creates a socket that is close-on-exec and non-blocking from the start.
int OpenSocket(int domain, int type);

}  // namespace handover
