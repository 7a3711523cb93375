// Entry points of fastmix._C. Every pointer is a raw address passed from Python as an integer; Python owns
// allocation, checks shapes and dtypes, and keeps the tensors alive until the call returns.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fastmix {

// Two-component GMM EM over groups (gmm_cpu.cpp), C++ with OpenMP. gmm2_segments_cpu validates (throws
// std::invalid_argument, a ValueError in Python, on a group outside [0, n_groups), or on a value that is not finite
// unless omit_nonfinite), takes per-group count/min/max and copies the finite values into group order: group g at
// sorted[offsets[g]:offsets[g + 1]]. The passes below and the EM (in place on weights/means/variances) read those
// segments. groups: n int32 ids when int32_groups, else n int64 ids.
void gmm2_segments_cpu(uintptr_t values, uintptr_t groups, bool int32_groups, int64_t n, int dtype, int64_t n_groups,
                       bool omit_nonfinite, uintptr_t sorted, uintptr_t offsets, uintptr_t count, uintptr_t lo,
                       uintptr_t hi);
// The inits' pass: per group the statistics (G, 7) of the hard split at split[g] around shifts[g, 0:2].
void gmm2_split_statistics_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t lo,
                               uintptr_t scale, uintptr_t split, uintptr_t shifts, uintptr_t stats);
// The k-means inits of every group in one call (seeds 0: the halves of the median split over a 2^bisections-step
// grid): centres (G, 2) and the statistics (G, 7) of their final split.
void gmm2_kmeans_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count, uintptr_t lo,
                     uintptr_t scale, uintptr_t low, uintptr_t high, uintptr_t seeds, int64_t bisections, int64_t steps,
                     uintptr_t centres, uintptr_t stats);
void gmm2_em_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count, uintptr_t lo,
                 uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances, uintptr_t log_likelihood,
                 uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol, double reg_covar, double eps);
// The k-means++ seeding's race over every group's segment: (G, 3) smallest finite key, sum and count of the values
// holding it; keys (n,) float64, divided by (x - centre[g])^2 when centre is not 0 (a null pointer).
void gmm2_race_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t lo, uintptr_t scale,
                   uintptr_t keys, uintptr_t centre, uintptr_t out_stats);
// One E-step over every group's segment: stats (G, 7) float64 in gmm.h's layout, taken around the given means (the
// distributed fit all-reduces them).
void gmm2_estep_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t lo, uintptr_t scale,
                    uintptr_t weights, uintptr_t means, uintptr_t variances, uintptr_t stats);
// The instruction sets the vectorised GMM passes can run with on this CPU, best first ("avx512", "avx2",
// "baseline"), and the one they run with: the best, or the one FASTMIX_CPU_ISA names.
std::vector<std::string> gmm2_cpu_isas();
std::string gmm2_cpu_isa();
// C++ emulation of the GMM CUDA kernel's blocks (gmm_cpu.cpp), on the same segments.
void gmm2_em_emulate(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count, uintptr_t lo,
                     uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances,
                     uintptr_t log_likelihood, uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol,
                     double reg_covar, double eps);

// Per-sample Mixup/CutMix (mix_cpu.cpp). mix_pairs_cpu: out[i, e] = x[partner[i], e] inside box i (int32
// y0, y1, x0, x1, half-open; boxes unused without has_box), else weight[i] x[i, e] + (1 - weight[i]) x[partner[i], e]
// (weight in the accumulation type: float32, float64 for float64); in place when out == x (same row stride).
// Throws std::invalid_argument on a partner outside [0, batch) or a box outside the image.
void mix_pairs_cpu(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                   int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t partner, int64_t height,
                   int64_t width, int64_t h_div, int64_t w_div, bool has_box, int dtype);
// mix_params_cpu (mix_params_cpu.cpp): one call's mix parameters and mixed labels from the int64 seed at seed_ptr, as
// the Triton parameter kernel draws them (same Philox streams, philox.h): lam float32 (B,), weight (B,) float32 or
// float64 (weight_dtype), boxes int32 (B, 4), partner and its inverse int64 (B,), cutmix bool (B,), and with labels
// (label_kind 1: int64 class indices (B,); 2: dense rows in label_dtype, unit column stride) the smoothed
// (y keep + add) and mixed labels (B, classes) in label_dtype (float32 or float64). Throws std::invalid_argument
// on a class index outside [0, classes), before writing anything.
void mix_params_cpu(uintptr_t seed_ptr, uintptr_t lam_ptr, uintptr_t weight_ptr, int weight_dtype, uintptr_t boxes_ptr,
                    uintptr_t partner_ptr, uintptr_t inverse_ptr, uintptr_t cutmix_ptr, int label_kind,
                    uintptr_t labels_ptr, int64_t label_row_stride, int label_dtype, uintptr_t mixed_labels_ptr,
                    int64_t classes, int64_t batch, int64_t height, int64_t width, int64_t low_h, int64_t span_h,
                    int64_t low_w, int64_t span_w, int draws, bool permute, double mixup_alpha, double cutmix_alpha,
                    double mix_prob, double switch_prob, bool minmax, bool correct_lam, double keep, double add);
// pair_mix_emulate: the general pair mix, the CUDA kernel's body over its launch grid, on host memory.
void pair_mix_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                      int64_t features, uintptr_t self_boxes, uintptr_t self_weights, uintptr_t seg_boxes,
                      uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets, int64_t height, int64_t width,
                      int64_t h_div, int64_t w_div, bool has_box, int dtype);
// mix_pairs_adjoint_cpu: the gradient of mix_pairs for a partner permutation, grad[j, e] = W_j(e) g[j, e] +
// (1 - W_i(e)) g[i, e] with i = inverse[j] and W_t 0 inside box t, weight[t] outside (float dtypes).
void mix_pairs_adjoint_cpu(uintptr_t grad, int64_t grad_row_stride, uintptr_t out, int64_t out_row_stride,
                           int64_t batch, int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t inverse,
                           int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box, int dtype);
// mix_pairs_emulate: the pair mix (adjoint false; sources = partner) or its adjoint (sources = the inverse
// permutation, or with offsets (B + 1 int64; 0 for none) the lists of the samples reading each row), the CUDA
// kernel's body (mix.h mix_pairs_thread) over its launch grid, on host memory: the CPU gradient for any partner.
void mix_pairs_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                       int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t sources, uintptr_t offsets,
                       int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box, bool adjoint,
                       int dtype);

// Flow-Mixup Mixing module (flow_cpu.cpp): the CUDA kernels' bodies over their launch grids, on host memory.
void flow_forward_emulate(uintptr_t z, int64_t z_row_stride, uintptr_t lam, uintptr_t perm, uintptr_t out,
                          int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                          bool keep_original, int dtype);
void flow_backward_emulate(uintptr_t grad, int64_t grad_row_stride, uintptr_t lam, uintptr_t inverse,
                           uintptr_t grad_z, int64_t grad_z_row_stride, int64_t batch, int64_t flow_size,
                           int64_t features, bool keep_original, int dtype);

// The fused losses on CPU tensors (lumix_cpu.cpp, lamix_cpu.cpp, balancemix_cpu.cpp), C++ with OpenMP over rows.
// Logits (B, K) have unit column stride and a DType code; losses, statistics, weights and
// dense labels are in the accumulation type (float, double for fp64 logits); gradients are (B, K) contiguous in the
// logits' type. Class indices (index_labels: int64 (B,)) and partners are checked first: std::invalid_argument.
void lumix_loss_forward_cpu(uintptr_t z, int64_t z_stride, int64_t batch, int64_t classes, int dtype, bool index_labels,
                            uintptr_t y_a, int64_t y_a_stride, uintptr_t y_b, int64_t y_b_stride, uintptr_t lam,
                            double eta, uintptr_t loss, uintptr_t stats);
void lumix_loss_backward_cpu(uintptr_t z, int64_t z_stride, int64_t batch, int64_t classes, int dtype,
                             bool index_labels, uintptr_t y_a, int64_t y_a_stride, uintptr_t y_b, int64_t y_b_stride,
                             uintptr_t lam, double eta, uintptr_t stats, uintptr_t grad_rows,
                             int64_t grad_rows_stride, uintptr_t grad);
void lumix_lambda_cpu(uintptr_t z, int64_t z_stride, int64_t batch, int64_t classes, int dtype, bool index_labels,
                      uintptr_t y_a, int64_t y_a_stride, uintptr_t y_b, int64_t y_b_stride, uintptr_t lam0,
                      uintptr_t lam_r, double r1, double r2, uintptr_t lam, uintptr_t lam_s);
void lamix_loss_forward_cpu(uintptr_t z, int64_t z_stride, uintptr_t t, int64_t t_stride, int64_t batch,
                            int64_t classes, int dtype, bool index_labels, uintptr_t labels, int64_t labels_stride,
                            uintptr_t lam, uintptr_t partner, double beta, uintptr_t loss);
void lamix_loss_backward_cpu(uintptr_t grad_loss, int64_t grad_loss_stride, uintptr_t z, int64_t z_stride,
                             uintptr_t t, int64_t t_stride, int64_t batch, int64_t classes, int dtype,
                             bool index_labels, uintptr_t labels, int64_t labels_stride, uintptr_t lam,
                             uintptr_t partner, double beta, bool detach_target, uintptr_t grad_z, uintptr_t grad_t);
// balancemix_loss_forward_cpu writes the loss and, where grad is not 0, its gradient in the accumulation type.
void balancemix_loss_forward_cpu(uintptr_t logits, int64_t logits_stride, uintptr_t targets, int64_t targets_stride,
                                 uintptr_t weights, int64_t weights_stride, int64_t batch, int64_t classes, int dtype,
                                 uintptr_t loss, uintptr_t grad);

// zeta-mixup on CPU tensors (zeta_cpu.cpp): the weights (eq. 3) from (B, B) uniform keys, rows with unit column
// stride, float32/float64; the mixed labels of int64 class indices (checked first: std::invalid_argument).
void zeta_weights_cpu(uintptr_t keys, int64_t keys_stride, int64_t batch, double gamma, double norm,
                      bool self_dominant, int dtype, uintptr_t weights);
void zeta_index_labels_cpu(uintptr_t weights, int dtype, uintptr_t labels, int64_t batch, int64_t classes,
                           uintptr_t mixed);

#if defined(FASTMIX_WITH_CUDA)
void check_launch(const char* what);  // raises std::runtime_error on a pending CUDA error
int cuda_driver_version();            // cudaDriverGetVersion, 0 when no driver is installed
int cuda_device_count();              // 0 when no device or no driver
void pair_mix_cuda(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                   int64_t features, uintptr_t self_boxes, uintptr_t self_weights, uintptr_t seg_boxes,
                   uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets, int64_t height, int64_t width,
                   int64_t h_div, int64_t w_div, bool has_box, int dtype, uintptr_t stream);
void mix_pairs_cuda(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                    int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t sources, uintptr_t offsets,
                    int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box, bool adjoint,
                    int dtype, uintptr_t stream);
void flow_forward_cuda(uintptr_t z, int64_t z_row_stride, uintptr_t lam, uintptr_t perm, uintptr_t out,
                       int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features, bool keep_original,
                       int dtype, uintptr_t stream);
void flow_backward_cuda(uintptr_t grad, int64_t grad_row_stride, uintptr_t lam, uintptr_t inverse, uintptr_t grad_z,
                        int64_t grad_z_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                        bool keep_original, int dtype, uintptr_t stream);
void gmm2_em_cuda(uintptr_t sorted_values, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count,
                  uintptr_t lo, uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances,
                  uintptr_t log_likelihood, uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol,
                  double reg_covar, double eps, uintptr_t stream);
#endif

}  // namespace fastmix
