/* placeholder: the pass manager lands here */ typedef int v3c_passes_placeholder;
