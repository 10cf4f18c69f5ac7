#include "errors.h"

#include <uv.h>

#include <cmath>

namespace handover {

Napi::Error SystemError(Napi::Env env, int err, const char* syscall,
                        const std::string& subject) {
  // uv_err_name() mallocs (and never frees) a name for an errno it does not
  // know; the _r form writes every name into our buffer.
  char code[64];
  uv_err_name_r(-err, code, sizeof(code));
  std::string message = std::string(syscall) + " " + code;
  if (!subject.empty()) message += " " + subject;
  char description[256];
  uv_strerror_r(-err, description, sizeof(description));
  message += std::string(" (") + description + ")";
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

bool ReadInteger(Napi::Env env, Napi::Value value, double min, double max,
                 const char* what, int64_t* out) {
  double v = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(v) || v != std::trunc(v) || v < min || v > max) {
    Napi::RangeError::New(env, std::string(what) + " must be an integer from " +
                                   std::to_string(static_cast<int64_t>(min)) + " to " +
                                   std::to_string(static_cast<int64_t>(max)))
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

int FdArg(const Napi::CallbackInfo& info, size_t index) {
  int64_t fd;
  Napi::Value value = info.Length() > index ? info[index] : info.Env().Undefined();
  if (!ReadInteger(info.Env(), value, 0, INT32_MAX, "a file descriptor", &fd)) return -1;
  return static_cast<int>(fd);
}

}  // namespace handover
