#include "errors.h"

#include <uv.h>

namespace handover {

Napi::Error SystemError(Napi::Env env, int err, const char* syscall,
                        const std::string& subject) {
  const char* code = uv_err_name(-err);
  std::string message = std::string(syscall) + " " + code;
  if (!subject.empty()) message += " " + subject;
  message += std::string(" (") + uv_strerror(-err) + ")";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

void ThrowSystemError(Napi::Env env, int err, const char* syscall,
                      const std::string& subject) {
  SystemError(env, err, syscall, subject).ThrowAsJavaScriptException();
}

int FdArg(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    Napi::TypeError::New(info.Env(), "expected a file descriptor (integer)")
        .ThrowAsJavaScriptException();
    return -1;
  }
  int fd = info[index].As<Napi::Number>().Int32Value();
  if (fd < 0) {
    Napi::TypeError::New(info.Env(), "file descriptor must be >= 0")
        .ThrowAsJavaScriptException();
    return -1;
  }
  return fd;
}

}  // namespace handover
