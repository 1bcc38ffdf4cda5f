// The Python module inception_fast._C.  It exports nothing callable: importing
// it loads this shared object, whose static TORCH_LIBRARY_IMPL blocks register
// the CPU (and, in a CUDA build, CUDA) kernels of inception_fast::reduce_pool_
// and inception_fast::branch_convs_, and the CPU kernel of
// inception_fast::cpu_max_pool2d, with the dispatcher.  The op schemas are
// defined in Python (inception_fast/ops.py); the dispatcher accepts kernels
// registered before their schema.  `with_cuda` says whether CUDA kernels were
// compiled in.
#include <Python.h>

#ifdef INCEPTION_FAST_WITH_CUDA
static constexpr long kWithCuda = 1;
#else
static constexpr long kWithCuda = 0;
#endif

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "Compiled kernels of inception_fast; importing registers them with torch.ops.inception_fast.",
      -1,       // m_size: no per-module state
      nullptr,  // m_methods
      nullptr,  // m_slots
      nullptr,  // m_traverse
      nullptr,  // m_clear
      nullptr,  // m_free
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddIntConstant(module, "with_cuda", kWithCuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
