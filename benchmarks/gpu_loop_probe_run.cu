// Times the design probe's loops (gpu_loop_probe.cu) on a Hopper GPU: the
// rate each loop sustains with its operands already in shared memory, which
// is the ceiling of the kernel built around it and the model's least-known
// input (gpu_design_model.py: the tensor cores' rate on m64n32k16 RS
// wgmma, B read once per wgmma). benchmarks/run_gpu.sh builds and runs it:
//
//   nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I csrc/include -I csrc \
//        -I <cutlass include> benchmarks/gpu_loop_probe_run.cu -o probe && ./probe
//
// Prints one JSON object: per loop, the median of 5 timed launches (one
// CTA per SM; the fp32 loop as many as fit), the MACs it issued and the rate, as
// TFLOP/s and as a fraction of the bf16 GEMM's 788 TFLOP/s (fp32: of the
// 67 TFLOP/s FFMA peak). Shared memory holds zeros; the lanes' addresses
// are laid out as the designs lay them out (conflict-free ldmatrix rows).
// Then the L2's read bandwidth (the model assumes 10 TB/s).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpu_loop_probe.cu"

namespace {

#define CHECK(x)                                                                          \
  do {                                                                                    \
    cudaError_t e = (x);                                                                  \
    if (e != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

// Per thread: the forward's pixel runs and K rows (each 16-byte row of a
// step's ldmatrix in its own plane, planes 144 B apart: 16 mod 128, so a
// matrix's 8 rows fall in 8 bank groups), grad-weight's channel row, the
// fp32 loop's run and weights.
std::vector<probe::Lane> lanes_for(const char* loop) {
  std::vector<probe::Lane> lanes(256);
  for (int t = 0; t < 256; ++t) {
    probe::Lane& l = lanes[t];
    const int lane = t % 32, warp = (t / 32) % 4;
    if (std::string(loop) == "forward") {
      for (int m = 0; m < probe::kMT; ++m) l.off[m] = (2 * m + (lane / 8) % 2) * 16;
      for (int j = 0; j < probe::kFwdSteps; ++j) l.off[probe::kMT + j] = (16 * j + lane % 8 + 8 * (lane / 16)) * 144;
    } else if (std::string(loop) == "grad_input") {
      // the warp's 16 pixels (64-byte rows of grad_out's 32 lanes) and this
      // lane's 16-byte chunk: ldmatrix's 8 rows 64 B apart hit 8 bank groups
      // in pairs of matrices; the kernel adds a tap's shift of whole pixels
      const int pixel = 16 * warp + lane % 8 + 8 * ((lane / 8) % 2);
      l.off[0] = pixel * 64 + (lane / 16) * 16;
    } else if (std::string(loop) == "grad_weight") {
      const int row = 16 * warp + lane % 8 + 8 * ((lane / 8) % 2);  // the warp's 16 channel rows
      l.off[0] = row * 272 + (lane / 16) * 16;                       // 272 B apart: 16 mod 128
    } else {
      l.off[0] = t * 8 + (t / 16) * 4;  // runs of 8 floats, a 16-byte pad every 16 runs
      l.off[1] = 3 * 2304;              // weights after 3 halo rows
      l.off[2] = 0;                     // every channel reads the same planes
      l.off[3] = 2304;                  // floats a halo row
    }
  }
  return lanes;
}

template <class Launch>
float median_ms(Launch launch) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  launch();  // warm-up
  CHECK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < 5; ++i) {
    CHECK(cudaEventRecord(a));
    launch();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float t;
    CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

// The L2's read bandwidth as the model's l2 term uses it: every SM streams
// 16-byte loads over a buffer that fits in L2 (16 MB of 50), after one pass
// has brought it there. n is a power of two.
__global__ void l2_read(const uint4* __restrict__ buf, int64_t n, int passes, uint32_t* out) {
  uint32_t acc = 0;
  for (int p = 0; p < passes; ++p)
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
      const uint4 v = buf[(i + p * 4099) & (n - 1)];  // a different start each pass
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  if (acc == 0x12345678u) out[0] = acc;  // keeps the loads
}

}  // namespace

int main() {
  int dev = 0, sms = 0;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, dev));
  float* out;
  probe::Lane* lanes;
  CHECK(cudaMalloc(&out, 256 * sizeof(float)));
  CHECK(cudaMalloc(&lanes, 256 * sizeof(probe::Lane)));
  const auto upload = [&](const char* loop) {
    const auto h = lanes_for(loop);
    CHECK(cudaMemcpy(lanes, h.data(), h.size() * sizeof(probe::Lane), cudaMemcpyHostToDevice));
  };
  const auto report = [&](const char* name, double macs, float ms, double peak, bool last) {
    const double tflops = 2 * macs / (ms * 1e-3) / 1e12;
    std::printf("  \"%s\": {\"ms\": %.4f, \"macs\": %.0f, \"tflops\": %.1f, \"fraction_of_peak\": %.3f}%s\n",
                name, ms, macs, tflops, tflops / peak, last ? "" : ",");
  };
  std::printf("{\n  \"device\": \"%s\", \"sms\": %d,\n", prop.name, sms);

  const int stages = 3000;
  CHECK(cudaFuncSetAttribute(probe::forward_ldsm_loop<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             probe::kSmemBytes));
  upload("forward");
  float ms = median_ms([&] {
    probe::forward_ldsm_loop<false><<<sms, 256, probe::kSmemBytes>>>(lanes, stages, out);
    CHECK(cudaGetLastError());
  });
  // per CTA and stage: 2 warpgroups x 9 steps x 4 tiles of m64n32k16
  report("forward_ldsm", double(sms) * stages * 2 * 9 * probe::kMT * 64 * probe::kBN * 16, ms, 788, false);

  CHECK(cudaFuncSetAttribute(probe::grad_weight_shift_loop<false>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, probe::kSmemBytes));
  upload("grad_weight");
  ms = median_ms([&] {
    probe::grad_weight_shift_loop<false><<<sms, 256, probe::kSmemBytes>>>(lanes, stages, 29 * 64, out);
    CHECK(cudaGetLastError());
  });
  report("grad_weight_shift", double(sms) * stages * 2 * 8 * probe::kTaps * 64 * probe::kBN * 16, ms, 788, false);

  CHECK(cudaFuncSetAttribute(probe::grad_input_group_loop<false>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, probe::kGiSmemBytes));
  upload("grad_input");
  uint32_t* masks;  // every group computed for every row
  std::vector<uint32_t> all(stages, (1u << probe::kGroups) - 1);
  CHECK(cudaMalloc(&masks, stages * sizeof(uint32_t)));
  CHECK(cudaMemcpy(masks, all.data(), stages * sizeof(uint32_t), cudaMemcpyHostToDevice));
  ms = median_ms([&] {
    probe::grad_input_group_loop<false><<<sms, 256, probe::kGiSmemBytes>>>(lanes, stages, masks, out);
    CHECK(cudaGetLastError());
  });
  // per CTA and row: 2 warpgroups x 9 taps x 16 groups x 2 k16 steps of m64n8k16
  report("grad_input_group", double(sms) * stages * 2 * 9 * probe::kGroups * 2 * 64 * 8 * 16, ms, 788, false);

  const int fp32_smem = 4 * 2304 * 4 + 16 * 9 * 16;
  CHECK(cudaFuncSetAttribute(probe::forward_fp32_window_loop, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             fp32_smem));
  upload("fp32");
  const int channels = 16, reps = 2000;
  int per_sm = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, probe::forward_fp32_window_loop, 256, fp32_smem));
  ms = median_ms([&] {
    probe::forward_fp32_window_loop<<<per_sm * sms, 256, fp32_smem>>>(lanes, channels, reps, out);
    CHECK(cudaGetLastError());
  });
  // per thread and channel: 3 kernel rows x 3 taps x 8 pixels x 4 lanes
  report("forward_fp32_window", double(per_sm) * sms * 256 * reps * channels * 288, ms, 67, false);

  const int64_t n = (16 << 20) / sizeof(uint4);  // 2^20 loads of 16 bytes
  uint4* buf;
  CHECK(cudaMalloc(&buf, n * sizeof(uint4)));
  CHECK(cudaMemset(buf, 1, n * sizeof(uint4)));
  const int passes = 200;  // 3.2 GB: a few hundred microseconds, well above the launch's cost
  ms = median_ms([&] {
    l2_read<<<4 * sms, 512>>>(buf, n, passes, reinterpret_cast<uint32_t*>(out));
    CHECK(cudaGetLastError());
  });
  std::printf("  \"l2_read\": {\"ms\": %.4f, \"bytes\": %.0f, \"TBps\": %.2f, \"model_TBps\": 10}\n", ms,
              double(n) * 16 * passes, double(n) * 16 * passes / (ms * 1e-3) / 1e12);
  std::printf("}\n");
  return 0;
}
