typedef int v3c_runtime_placeholder;
