// pybind11 module fastmix._C: torch-free entry points (raw pointers and sizes as integers).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include "native.h"

#if defined(FASTMIX_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastmix native kernels (CUDA and C++), torch-free";
#if defined(FASTMIX_WITH_CUDA)
  m.attr("built_with_cuda") = true;
  m.attr("cuda_build_version") = CUDART_VERSION;  // e.g. 13000 for CUDA 13.0
  m.attr("cuda_archs") = FASTMIX_CUDA_ARCHS;
  m.def("cuda_driver_version", &fastmix::cuda_driver_version);
  m.def("cuda_device_count", &fastmix::cuda_device_count);
  m.def("gmm2_em_cuda", &fastmix::gmm2_em_cuda, py::call_guard<py::gil_scoped_release>());
  m.def("flow_forward_cuda", &fastmix::flow_forward_cuda, py::call_guard<py::gil_scoped_release>());
  m.def("flow_backward_cuda", &fastmix::flow_backward_cuda, py::call_guard<py::gil_scoped_release>());
  m.def("pair_mix_cuda", &fastmix::pair_mix_cuda, py::call_guard<py::gil_scoped_release>());
  m.def("mix_pairs_cuda", &fastmix::mix_pairs_cuda, py::call_guard<py::gil_scoped_release>());
#else
  m.attr("built_with_cuda") = false;
  m.attr("cuda_build_version") = 0;
  m.attr("cuda_archs") = "";
#endif
  m.def("flow_forward_emulate", &fastmix::flow_forward_emulate, py::call_guard<py::gil_scoped_release>());
  m.def("flow_backward_emulate", &fastmix::flow_backward_emulate, py::call_guard<py::gil_scoped_release>());
  m.def("pair_mix_emulate", &fastmix::pair_mix_emulate, py::call_guard<py::gil_scoped_release>());
  m.def("mix_pairs_emulate", &fastmix::mix_pairs_emulate, py::call_guard<py::gil_scoped_release>());
  m.def("mix_pairs_adjoint_cpu", &fastmix::mix_pairs_adjoint_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("mix_pairs_cpu", &fastmix::mix_pairs_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("mix_params_cpu", &fastmix::mix_params_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_segments_cpu", &fastmix::gmm2_segments_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_split_statistics_cpu", &fastmix::gmm2_split_statistics_cpu,
        py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_em_cpu", &fastmix::gmm2_em_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_kmeans_cpu", &fastmix::gmm2_kmeans_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_race_cpu", &fastmix::gmm2_race_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_estep_cpu", &fastmix::gmm2_estep_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_cpu_isas", &fastmix::gmm2_cpu_isas);
  m.def("gmm2_cpu_isa", &fastmix::gmm2_cpu_isa);
  m.def("lumix_loss_forward_cpu", &fastmix::lumix_loss_forward_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("lumix_loss_backward_cpu", &fastmix::lumix_loss_backward_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("lumix_lambda_cpu", &fastmix::lumix_lambda_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("lamix_loss_forward_cpu", &fastmix::lamix_loss_forward_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("lamix_loss_backward_cpu", &fastmix::lamix_loss_backward_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("balancemix_loss_forward_cpu", &fastmix::balancemix_loss_forward_cpu,
        py::call_guard<py::gil_scoped_release>());
  m.def("zeta_weights_cpu", &fastmix::zeta_weights_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("zeta_index_labels_cpu", &fastmix::zeta_index_labels_cpu, py::call_guard<py::gil_scoped_release>());
  m.def("gmm2_em_emulate", &fastmix::gmm2_em_emulate, py::call_guard<py::gil_scoped_release>());
}
