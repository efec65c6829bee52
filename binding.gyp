{
  "targets": [
    {
      "target_name": "falcon_native",
      "sources": [
        "native/core/dtype.cpp",
        "native/core/model_config.cpp",
        "native/core/model.cpp",
        "native/core/kv_pool.cpp",
        "native/core/kv_cache.cpp",
        "native/core/step_runner.cpp",
        "native/core/sampler.cpp",
        "native/core/backend.cpp",
        "native/core/thread_pool.cpp",
        "native/core/weight_file.cpp",
        "native/core/memory.cpp",
        "native/core/aligned_memory.cpp",
        "native/core/platform.cpp",
        "native/core/block_manager.cpp",
        "native/core/scheduler.cpp",
        "native/core/engine.cpp",
        "native/core/fake_step_runner.cpp",
        "native/cpu/cpu_backend.cpp",
        "native/cpu/cpu_features.cpp",
        "native/cpu/probes.cpp",
        "native/cpu/kernels/dispatch.cpp",
        "native/cpu/kernels/scalar.cpp",
        "native/cpu/kernels/avx2.cpp",
        "native/cpu/kernels/avx512.cpp",
        "native/cpu/kernels/int4_scalar.cpp",
        "native/cpu/kernels/int4_avx2.cpp",
        "native/cpu/kernels/int4_avx512.cpp",
        "native/cpu/ops/linear.cpp",
        "native/cpu/ops/layer_norm.cpp",
        "native/cpu/ops/embedding.cpp",
        "native/cpu/ops/rotary.cpp",
        "native/cpu/ops/attention.cpp",
        "native/cpu/ops/cache_write.cpp",
        "native/binding/addon.cpp",
        "native/binding/model_wrap.cpp",
        "native/binding/cache_wrap.cpp",
        "native/binding/step_test.cpp",
        "native/binding/matmul_test.cpp",
        "native/binding/weight_file_wrap.cpp",
        "native/binding/engine_wrap.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: a promise settled while its worker thread terminates
      # must not abort the process (see TaskWorker::OnOK).
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } }
    }
  ]
}
