{
  "targets": [
    {
      "target_name": "handover",
      "conditions": [
        ["OS!='win'", {
          "sources": [
            "native/addon.cc",
            "native/errors.cc",
            "native/sockets.cc",
            "native/fdpass.cc",
            "native/credentials.cc",
            "native/process.cc",
            "native/lock.cc"
          ]
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "10.15",
            "OTHER_CFLAGS": ["-fstack-protector-strong"]
          }
        }]
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags": ["-fvisibility=hidden", "-fstack-protector-strong", "-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-fstack-protector-strong", "-Wall", "-Wextra"]
    }
  ]
}
