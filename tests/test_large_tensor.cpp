// Tensors of more than 2^31 elements: offsets must be 64-bit everywhere. k, v,
// out, dk and dv get a batch stride of 2^32 + 40 elements, so batch 1 lives past
// element 2^32 of its buffer: an offset truncated to 32 bits (signed or not) would
// land on batch 0's rows and produce wrong values. The buffers are reserved with
// mmap(MAP_NORESERVE): only the pages actually touched get memory (~a few MB).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cerrno>
#include <cstring>

#include "support.hpp"

namespace fa_test {
namespace {

constexpr std::int64_t kHugeStride = (std::int64_t(1) << 32) + 40;  // elements

struct Mapping {
  void* base = MAP_FAILED;
  std::size_t bytes = 0;
  explicit Mapping(std::size_t n) : bytes(n) {
    base = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  }
  ~Mapping() {
    if (base != MAP_FAILED) munmap(base, bytes);
  }
  bool ok() const { return base != MAP_FAILED; }
};

// A (2, s, h, d) operand whose batch stride is kHugeStride, inside `m`.
HostTensor huge_operand(Mapping& m, DType dt, std::int64_t s, std::int64_t h, std::int64_t d) {
  return HostTensor::wrap(m.base, dt, {2, s, h, d}, {kHugeStride, h * d, d, 1});
}

void copy_values(const HostTensor& from, HostTensor& to) {
  ASSERT_EQ(from.numel(), to.numel());
  for (std::int64_t i = 0; i < from.numel(); ++i) to.set(i, from.get(i));
}

TEST(LargeTensor, OffsetsBeyond2Pow32Elements) {
  for (DType dt : {DType::f32, DType::bf16}) {
    Case c;
    c.dtype = dt;
    c.batch = 2;
    c.seqlen_q = 19;
    c.seqlen_k = 23;
    c.heads_q = 2;
    c.heads_kv = 1;
    c.head_dim = 16;
    c.causal = true;
    const Problem compact = make_problem(c);  // the same values, ordinary strides
    SCOPED_TRACE(compact.describe());

    const std::size_t es = flashattn::dtype_size(dt);
    const std::size_t kv_bytes = std::size_t(kHugeStride + c.seqlen_k * c.heads_kv * c.head_dim) * es;
    const std::size_t q_bytes = std::size_t(kHugeStride + c.seqlen_q * c.heads_q * c.head_dim) * es;
    Mapping mk(kv_bytes), mv(kv_bytes), mo(q_bytes), mdk(kv_bytes), mdv(kv_bytes);
    if (!(mk.ok() && mv.ok() && mo.ok() && mdk.ok() && mdv.ok()))
      GTEST_SKIP() << "cannot reserve " << kv_bytes << " bytes of address space: " << std::strerror(errno);

    Problem p = compact;
    p.k = huge_operand(mk, dt, c.seqlen_k, c.heads_kv, c.head_dim);
    p.v = huge_operand(mv, dt, c.seqlen_k, c.heads_kv, c.head_dim);
    copy_values(compact.k, p.k);
    copy_values(compact.v, p.v);
    // The test really addresses past element 2^32 (and so past 2^31).
    const auto* b1 = static_cast<const char*>(p.k.data()) + p.k.offset_of({1, 0, 0, 0}) * std::int64_t(es);
    ASSERT_GE(b1 - static_cast<const char*>(mk.base), (std::int64_t(1) << 32) * std::int64_t(es));
    ASSERT_GT(p.k.offset_of({1, c.seqlen_k - 1, 0, c.head_dim - 1}), std::int64_t(1) << 32);

    const Outputs ref = run_reference(compact, true);
    for (Backend b : {Backend::cpu_reference, Backend::cpu_flash}) {
      Outputs o = alloc_outputs(compact, true);
      HostTensor out = huge_operand(mo, dt, c.seqlen_q, c.heads_q, c.head_dim);
      HostTensor dk = huge_operand(mdk, dt, c.seqlen_k, c.heads_kv, c.head_dim);
      HostTensor dv = huge_operand(mdv, dt, c.seqlen_k, c.heads_kv, c.head_dim);
      for (HostTensor* t : {&out, &dk, &dv})
        for (std::int64_t i = 0; i < t->numel(); ++i) t->set(i, std::numeric_limits<float>::quiet_NaN());
      const flashattn::Options opt = p.options(b);
      flashattn::forward(p.q.view, p.k.view, p.v.view, out.view, o.lse.view, opt);
      flashattn::backward(p.q.view, p.k.view, p.v.view, out.view, p.dout.view, o.lse.view, o.dq.view, dk.view,
                          dv.view, opt);
      copy_values(out, o.out);
      copy_values(dk, o.dk);
      copy_values(dv, o.dv);
      Outputs naive;
      if (dt != DType::f32) naive = run_naive_low_precision(compact, true);
      for (const Verdict& v : check_outputs(compact, o, ref, dt != DType::f32 ? &naive : nullptr, true))
        EXPECT_TRUE(v.ok) << flashattn::backend_name(b) << ": " << v;
    }
  }
}

}  // namespace
}  // namespace fa_test
