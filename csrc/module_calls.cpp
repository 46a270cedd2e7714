// The xsep modules' calls, straight from Python to the op's kernel (xsep._C's functions, used by
// xsep.functional.module_call). Inside a model, with the interpreter's data evicted by the other
// layers, calling torch.ops.xsep.<op> below autograd cost 40-55 us a call before and after the
// kernel, the Python checks in front of it 50-70 more: as much as a small layer's kernel
// (convnext_atto, channels-last, batch 8, 2-core Intel Xeon, 2026-12-06; see module_call). Here the
// arguments are read from Python directly, the checks made in C++, and the op called through the
// dispatcher's typed handle below autograd (profilers still see it): 20-35 us in the same places.
//
// Each function returns the op's output (an inference call, or the autograd Function's forward,
// grad mode off); False for a training call with nothing else in the way (the caller then applies
// the Function); None, and the caller takes the public path, wherever that path would do something
// else: a tensor subclass, a torch function or dispatch mode, a torch.func transform (their dispatch
// keys), tracing, autocast, forward-mode AD, a layout the automatic choice does not give the native
// backend, or arguments the op refuses (the public path then says why). torch.compile is the
// caller's to exclude (Python state, which Dynamo reads while tracing).
#include "module_calls.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <cstdlib>
#include <optional>
#include <string_view>

#include "op_signatures.h"

namespace xsep {
namespace {

// Layouts as the automatic choice names them (xsep.functional._layout), as the bits of
// xsep._extension.LAYOUT_BITS: 1 "nchw", 2 "channels_last".
int layout_bit(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous() ? 2 : 1;
}

// Whether the mask `layouts` (a Python int) has the input's layout.
bool layout_chosen(PyObject* layouts, const at::Tensor& input) {
  const long mask = PyLong_AsLong(layouts);
  if (mask == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return (mask & layout_bit(input)) != 0;
}

// A torch.Tensor or nn.Parameter (not a subclass, whose __torch_function__ may change the call).
bool plain_tensor(PyObject* o) { return THPVariable_CheckExact(o); }

std::optional<at::Tensor> optional_tensor(PyObject* o) {
  if (o == Py_None) return std::nullopt;
  return THPVariable_Unpack(o);
}

const at::Tensor* pointer(const std::optional<at::Tensor>& t) { return t.has_value() ? &*t : nullptr; }

bool plain_or_none(PyObject* o) { return o == Py_None || plain_tensor(o); }

// A tuple of n Python ints into out.
bool read_ints(PyObject* seq, int64_t* out, Py_ssize_t n) {
  if (!PyTuple_CheckExact(seq) || PyTuple_GET_SIZE(seq) != n) return false;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* v = PyTuple_GET_ITEM(seq, i);
    if (!PyLong_CheckExact(v)) return false;
    out[i] = PyLong_AsLongLong(v);
    if (out[i] == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
  }
  return true;
}

bool read_str(PyObject* o, std::string_view* out) {
  if (!PyUnicode_CheckExact(o)) return false;
  Py_ssize_t size = 0;
  const char* s = PyUnicode_AsUTF8AndSize(o, &size);
  if (s == nullptr) {
    PyErr_Clear();
    return false;
  }
  *out = std::string_view(s, size);
  return true;
}

// What a call may do: run the op's kernel below autograd (kRun), go through the autograd Function
// that records it, the caller's (kRecord: tensors require grad under grad mode, nothing else in the
// way), or neither (kDecline: XSEP_BACKEND set; a torch function or dispatch mode or a torch.func
// transform, whose keys are in the thread's included set beyond the default ones; tracing; autocast
// for the input's device; a forward-mode AD level, the only one torch allows, 0). The Python side
// (xsep.functional.module_call) makes the same checks for the calls declined here: a new condition
// goes in both.
enum class Verdict { kRun, kRecord, kDecline };

// others: the other tensor arguments, nullptr for those absent.
Verdict verdict(const at::Tensor& input, std::initializer_list<const at::Tensor*> others) {
  if (const char* backend = std::getenv("XSEP_BACKEND"); backend != nullptr && *backend != '\0') {
    return Verdict::kDecline;  // the Python path reads it (xsep.functional._native_layouts)
  }
  if (at::impl::torch_function_mode_enabled() ||
      !(c10::impl::tls_local_dispatch_key_set().included_ - c10::default_included_set).empty() ||
      torch::jit::tracer::isTracing() || at::autocast::is_autocast_enabled(input.device().type()) ||
      torch::autograd::ForwardADLevel::try_get_by_idx(0) != nullptr) {
    return Verdict::kDecline;
  }
  if (!at::GradMode::is_enabled()) return Verdict::kRun;
  bool record = input.requires_grad();
  for (const auto* t : others) record = record || (t != nullptr && t->requires_grad());
  return record ? Verdict::kRecord : Verdict::kRun;
}

// Runs call() below autograd without the GIL; an undefined tensor where the op throws (a C++
// exception, from its argument checks): the caller then returns None.
template <typename Call>
at::Tensor below_autograd(Call&& call) {
  at::Tensor out;
  PyThreadState* state = PyEval_SaveThread();
  try {
    const at::AutoDispatchBelowADInplaceOrView guard;
    out = call();
  } catch (const std::exception&) {
    out = at::Tensor();
  }
  PyEval_RestoreThread(state);
  return out;
}

PyObject* result(at::Tensor out) {
  if (!out.defined()) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(out));
}

// The answer where the kernel does not run: False for kRecord, else None.
PyObject* not_run(Verdict v) {
  if (v == Verdict::kRecord) Py_RETURN_FALSE;
  Py_RETURN_NONE;
}

// depthwise_conv2d(layouts, input, weight, bias, stride, padding, dilation, input_activation):
// layouts is the bit mask of layout_bit's layouts the native backend is chosen for; stride,
// padding (top, bottom, left, right) and dilation are tuples of ints.
PyObject* depthwise_conv2d(PyObject* const* args, Py_ssize_t nargs) {
  int64_t stride[2], padding[4], dilation[2];
  std::string_view activation;
  if (nargs != 8 || !PyLong_CheckExact(args[0]) || !plain_tensor(args[1]) || !plain_tensor(args[2]) ||
      !plain_or_none(args[3]) || !read_ints(args[4], stride, 2) || !read_ints(args[5], padding, 4) ||
      !read_ints(args[6], dilation, 2) || !read_str(args[7], &activation)) {
    Py_RETURN_NONE;
  }
  const at::Tensor& input = THPVariable_Unpack(args[1]);
  const at::Tensor& weight = THPVariable_Unpack(args[2]);
  const std::optional<at::Tensor> bias = optional_tensor(args[3]);
  if (!layout_chosen(args[0], input)) Py_RETURN_NONE;
  const Verdict v = verdict(input, {&weight, pointer(bias)});
  if (v != Verdict::kRun) return not_run(v);
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("xsep::depthwise_conv2d", "").typed<DepthwiseConv2dFn>();
  return result(below_autograd([&] { return op.call(input, weight, bias, stride, padding, dilation, activation); }));
}

// separable_conv2d(layouts, input, depthwise_weight, pointwise_weight, bias, stride, padding,
// dilation, input_activation, mid_activation, depthwise_bias): as depthwise_conv2d.
PyObject* separable_conv2d(PyObject* const* args, Py_ssize_t nargs) {
  int64_t stride[2], padding[4], dilation[2];
  std::string_view input_activation, mid_activation;
  if (nargs != 11 || !PyLong_CheckExact(args[0]) || !plain_tensor(args[1]) || !plain_tensor(args[2]) ||
      !plain_tensor(args[3]) || !plain_or_none(args[4]) || !read_ints(args[5], stride, 2) ||
      !read_ints(args[6], padding, 4) || !read_ints(args[7], dilation, 2) || !read_str(args[8], &input_activation) ||
      !read_str(args[9], &mid_activation) || !plain_or_none(args[10])) {
    Py_RETURN_NONE;
  }
  const at::Tensor& input = THPVariable_Unpack(args[1]);
  const at::Tensor& depthwise_weight = THPVariable_Unpack(args[2]);
  const at::Tensor& pointwise_weight = THPVariable_Unpack(args[3]);
  const std::optional<at::Tensor> bias = optional_tensor(args[4]);
  const std::optional<at::Tensor> depthwise_bias = optional_tensor(args[10]);
  if (!layout_chosen(args[0], input)) Py_RETURN_NONE;
  const Verdict v = verdict(input, {&depthwise_weight, &pointwise_weight, pointer(bias), pointer(depthwise_bias)});
  if (v != Verdict::kRun) return not_run(v);
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("xsep::separable_conv2d", "").typed<SeparableConv2dFn>();
  return result(below_autograd([&] {
    return op.call(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation, input_activation,
                   mid_activation, depthwise_bias);
  }));
}

// A function of the module: `call`, None where it throws (from a check outside the kernel's call,
// e.g. a device type autocast does not know), so that no C++ exception reaches the interpreter.
template <PyObject* (*call)(PyObject* const*, Py_ssize_t)>
PyObject* no_throw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  try {
    return call(args, nargs);
  } catch (const std::exception&) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
}

PyMethodDef methods[] = {
    {"depthwise_conv2d", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(no_throw<depthwise_conv2d>)),
     METH_FASTCALL, "The DepthwiseConv2d module's call, or False or None (csrc/module_calls.cpp)."},
    {"separable_conv2d", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(no_throw<separable_conv2d>)),
     METH_FASTCALL, "The SeparableConv2d module's call, or False or None (csrc/module_calls.cpp)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* module_call_methods() { return methods; }

}  // namespace xsep
