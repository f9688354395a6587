// Torch glue of the CPU sampling kernels (csrc/include/ponder/sampling.h): checks,
// dtype dispatch, and a parallel loop over rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ponder/sampling.h"
#include "ponder_ops.h"
#include "sampling_checks.h"

namespace ponder::cpu {
namespace {

// Per-row parameters on the host, range-checked (CPU tensors are cheap to read).
struct RowParams {
  at::Tensor temperature, top_k, top_p, min_p;

  RowParams(const at::Tensor& t, const at::Tensor& k, const at::Tensor& p, const at::Tensor& m)
      : temperature(t.contiguous()), top_k(k.contiguous()), top_p(p.contiguous()), min_p(m.contiguous()) {
    const int64_t batch = temperature.size(0);
    const float* tp = temperature.data_ptr<float>();
    const int64_t* kp = top_k.data_ptr<int64_t>();
    const float* pp = top_p.data_ptr<float>();
    const float* mp = min_p.data_ptr<float>();
    for (int64_t r = 0; r < batch; ++r) {
      TORCH_CHECK(tp[r] >= 0.0f, "temperature[", r, "] = ", tp[r], " is out of range: expected >= 0");
      TORCH_CHECK(kp[r] >= 0, "top_k[", r, "] = ", kp[r], " is out of range: expected >= 0");
      TORCH_CHECK(pp[r] > 0.0f && pp[r] <= 1.0f, "top_p[", r, "] = ", pp[r], " is out of range: expected (0, 1]");
      TORCH_CHECK(mp[r] >= 0.0f && mp[r] < 1.0f, "min_p[", r, "] = ", mp[r], " is out of range: expected [0, 1)");
    }
  }

  SamplingParams row(int64_t r) const {
    return {temperature.data_ptr<float>()[r], top_k.data_ptr<int64_t>()[r], top_p.data_ptr<float>()[r],
            min_p.data_ptr<float>()[r]};
  }
};

// Calls fn(typed data pointer) with logits' storage reinterpreted as the kernel's
// element type.
template <typename Fn>
void dispatch_logits(const at::Tensor& logits, Fn&& fn) {
  switch (logits.scalar_type()) {
    case at::kFloat:
      return fn(logits.const_data_ptr<float>());
    case at::kHalf:
      return fn(reinterpret_cast<const Float16Bits*>(logits.const_data_ptr<at::Half>()));
    case at::kBFloat16:
      return fn(reinterpret_cast<const BFloat16Bits*>(logits.const_data_ptr<at::BFloat16>()));
    default:
      TORCH_CHECK(false, "unsupported logits dtype ", logits.scalar_type());
  }
}

// Each worker thread keeps its buffers between calls: a fresh row-sized buffer per call
// would be a fresh mmap, whose page faults cost more than sampling a small batch.
RowScratch& thread_scratch() {
  thread_local RowScratch scratch;
  return scratch;
}

void check_cpu(const at::Tensor& logits) {
  TORCH_CHECK(logits.device().is_cpu(), "the cpu sampling kernels need CPU tensors, got ", logits.device());
}

}  // namespace

at::Tensor filtered_probs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                          const at::Tensor& top_p, const at::Tensor& min_p) {
  check_sampling_args(logits, temperature, top_k, top_p, min_p, nullptr);
  check_cpu(logits);
  const RowParams params(temperature, top_k, top_p, min_p);
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  at::Tensor probs = at::empty({batch, vocab}, logits.options().dtype(at::kFloat));
  float* out = probs.data_ptr<float>();
  dispatch_logits(logits, [&](const auto* data) {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      RowScratch& scratch = thread_scratch();
      for (int64_t r = begin; r < end; ++r) {
        const RowFilter f = prepare_row(data + r * logits.stride(0), logits.stride(1), vocab, params.row(r), scratch);
        write_probs(f, scratch, vocab, out + r * vocab);
      }
    });
  });
  return probs;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature,
                                                      const at::Tensor& top_k, const at::Tensor& top_p,
                                                      const at::Tensor& min_p, const at::Tensor& seeds,
                                                      int64_t num_samples) {
  check_sampling_args(logits, temperature, top_k, top_p, min_p, &seeds);
  check_cpu(logits);
  TORCH_CHECK(num_samples >= 1, "num_samples must be >= 1, got ", num_samples);
  const RowParams params(temperature, top_k, top_p, min_p);
  const at::Tensor seeds_c = seeds.contiguous();
  const int64_t* seed_data = seeds_c.data_ptr<int64_t>();
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  at::Tensor tokens = at::empty({batch, num_samples}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({batch, num_samples}, logits.options().dtype(at::kFloat));
  at::Tensor raw_logprobs = at::empty({batch, num_samples}, logits.options().dtype(at::kFloat));
  int64_t* tok_out = tokens.data_ptr<int64_t>();
  float* lp_out = logprobs.data_ptr<float>();
  float* raw_out = raw_logprobs.data_ptr<float>();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  dispatch_logits(logits, [&](const auto* data) {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      RowScratch& scratch = thread_scratch();
      for (int64_t r = begin; r < end; ++r) {
        const auto* row = data + r * logits.stride(0);
        const RowFilter f = prepare_row(row, logits.stride(1), vocab, params.row(r), scratch);
        const uint64_t seed = static_cast<uint64_t>(seed_data[r]);
        const double log_raw_sum = std::log(f.raw_sum), log_kept_mass = std::log(f.kept_mass);
        for (int64_t d = 0; d < num_samples; ++d) {
          const int64_t o = r * num_samples + d;
          if (!f.finite) {
            tok_out[o] = 0;
            lp_out[o] = raw_out[o] = kNegInf;
            continue;
          }
          int64_t token = f.argmax;
          lp_out[o] = 0.0f;
          if (!f.greedy) {
            const Draw drawn = draw_token(f, scratch, vocab,
                                          Seed{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)},
                                          static_cast<uint32_t>(d), static_cast<uint32_t>(r));
            token = drawn.token;
            lp_out[o] = static_cast<float>((drawn.s - f.s_max) - log_kept_mass);
          }
          tok_out[o] = token;
          // The kernels hold x / T; the raw log-prob needs x itself.
          float x = to_float(row[token * logits.stride(1)]);
          x = std::isinf(x) ? std::numeric_limits<float>::max() : x;  // a drawn token is never NaN or -inf
          raw_out[o] = static_cast<float>((x - f.raw_max) - log_raw_sum);
        }
      }
    });
  });
  return {tokens, logprobs, raw_logprobs};
}

}  // namespace ponder::cpu
