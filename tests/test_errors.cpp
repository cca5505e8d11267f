// Every bad input gets a flashattn::Error with the right code and a message that
// names the argument; never a crash. Each test starts from a valid call (checked
// to succeed) and breaks one thing.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "support.hpp"

namespace fa_test {
namespace {

using flashattn::ErrorCode;
using flashattn::TensorView;

// A valid small problem with its outputs; `call` runs forward, or backward when asked.
struct Call {
  Problem p;
  Outputs o;
  flashattn::Options opt;
  TensorView q, k, v, out, lse, dout, dq, dk, dv;
  std::optional<TensorView> dbias;

  explicit Call(Case c = small()) : p(make_problem(c)), o(alloc_outputs(p, true)), opt(p.options(Backend::automatic)) {
    q = p.q.view, k = p.k.view, v = p.v.view, dout = p.dout.view;
    out = o.out.view, lse = o.lse.view, dq = o.dq.view, dk = o.dk.view, dv = o.dv.view;
    if (o.dbias.defined()) dbias = o.dbias.view;
  }
  static Case small() {
    Case c;
    c.batch = 2;
    c.seqlen_q = 5;
    c.seqlen_k = 7;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 8;
    return c;
  }
  void forward() const { flashattn::forward(q, k, v, out, lse, opt); }
  void backward() const { flashattn::backward(q, k, v, out, dout, lse, dq, dk, dv, opt, dbias); }
};

// Runs fn, expecting flashattn::Error with `code` and `name` in the message.
void expect_error(const std::function<void()>& fn, ErrorCode code, const std::string& name) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected " << flashattn::error_code_name(code) << " naming '" << name << "'";
  } catch (const flashattn::Error& e) {
    EXPECT_EQ(e.code(), code) << "got " << flashattn::error_code_name(e.code()) << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos)
        << "message does not name '" << name << "': " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-flashattn exception: " << e.what();
  }
}

TEST(Errors, BaselineCallsAreValid) {
  Call c;
  EXPECT_NO_THROW(c.forward());
  EXPECT_NO_THROW(c.backward());
}

TEST(Errors, ShapeMismatch) {
  Call c;
  c.k.shape[3] = 4;  // head dim differs from q's
  expect_error([&] { c.forward(); }, ErrorCode::shape_mismatch, "k");
  Call c2;
  c2.v.shape[1] = 6;  // v's seqlen differs from k's
  expect_error([&] { c2.forward(); }, ErrorCode::shape_mismatch, "v");
  Call c3;
  c3.out.shape[1] = 4;
  expect_error([&] { c3.forward(); }, ErrorCode::shape_mismatch, "out");
  Call c4;
  c4.k.shape[0] = 1;
  c4.v.shape[0] = 1;  // batch differs
  expect_error([&] { c4.forward(); }, ErrorCode::shape_mismatch, "k");
  Call c5;
  c5.q.rank = 3;  // fixed-length q must be rank 4
  expect_error([&] { c5.forward(); }, ErrorCode::shape_mismatch, "q");
  Call c6;
  c6.dk.shape[1] = 3;
  expect_error([&] { c6.backward(); }, ErrorCode::shape_mismatch, "dk");
  Call c7;
  c7.dout.shape[2] = 2;
  expect_error([&] { c7.backward(); }, ErrorCode::shape_mismatch, "dout");
}

TEST(Errors, DtypeMismatch) {
  Call c;
  c.k.dtype = DType::f16;
  expect_error([&] { c.forward(); }, ErrorCode::dtype_mismatch, "k");
  Call c2;
  c2.q.dtype = c2.k.dtype = c2.v.dtype = c2.out.dtype = DType::i32;
  expect_error([&] { c2.forward(); }, ErrorCode::dtype_mismatch, "q");
  Call c3;
  c3.out.dtype = DType::bf16;
  expect_error([&] { c3.forward(); }, ErrorCode::dtype_mismatch, "out");
  Call c4;
  c4.lse.dtype = DType::f16;
  expect_error([&] { c4.forward(); }, ErrorCode::dtype_mismatch, "lse");
  Call c5;
  c5.dv.dtype = DType::f16;
  expect_error([&] { c5.backward(); }, ErrorCode::dtype_mismatch, "dv");
}

TEST(Errors, HeadDimOutOfRange) {
  for (int d : {257, 512}) {
    Case cs = Call::small();
    cs.head_dim = d;
    Call c(cs);
    expect_error([&] { c.forward(); }, ErrorCode::invalid_argument, "head dim");
  }
  Case cs = Call::small();
  cs.head_dim = 0;
  Call c(cs);
  expect_error([&] { c.forward(); }, ErrorCode::invalid_argument, "head dim");
  // 256 itself is valid.
  cs.head_dim = 256;
  Call ok(cs);
  EXPECT_NO_THROW(ok.forward());
}

TEST(Errors, HeadDimStrideNotOne) {
  Call c;
  c.q.strides[3] = 2;
  expect_error([&] { c.forward(); }, ErrorCode::bad_stride, "q");
  Call c2;
  c2.dq.strides[3] = 2;
  expect_error([&] { c2.backward(); }, ErrorCode::bad_stride, "dq");
  Call c3;
  c3.v.strides[0] = -c3.v.strides[0];  // negative strides are rejected, not followed
  expect_error([&] { c3.forward(); }, ErrorCode::bad_stride, "v");
}

TEST(Errors, NullPointer) {
  Call c;
  c.q.data = nullptr;
  expect_error([&] { c.forward(); }, ErrorCode::null_pointer, "q");
  Call c2;
  c2.lse.data = nullptr;
  expect_error([&] { c2.forward(); }, ErrorCode::null_pointer, "lse");
  Call c3;
  c3.dout.data = nullptr;
  expect_error([&] { c3.backward(); }, ErrorCode::null_pointer, "dout");
}

TEST(Errors, KvHeadsMustDivideQHeads) {
  Case cs = Call::small();
  cs.heads_q = 6;
  cs.heads_kv = 4;
  Call c(cs);
  expect_error([&] { c.forward(); }, ErrorCode::shape_mismatch, "k");
}

TEST(Errors, WindowBelowMinusOne) {
  Call c;
  c.opt.window_left = -2;
  expect_error([&] { c.forward(); }, ErrorCode::invalid_argument, "window_left");
  Call c2;
  c2.opt.window_right = -7;
  expect_error([&] { c2.forward(); }, ErrorCode::invalid_argument, "window_right");
  // Causal with a left window is the usual local-causal mask: valid.
  Call ok;
  ok.opt.causal = true;
  ok.opt.window_left = 3;
  EXPECT_NO_THROW(ok.forward());
  EXPECT_NO_THROW(ok.backward());
}

Case varlen_case() {
  Case cs = Call::small();
  cs.varlen_q = {3, 5};
  cs.varlen_k = {4, 2};
  return cs;
}

TEST(Errors, CuSeqlensNotIncreasing) {
  Call c(varlen_case());
  auto* cu = static_cast<std::int32_t*>(c.p.cu_q.data());
  cu[1] = 6;  // {0, 6, 8}: fine
  cu[2] = 5;  // {0, 6, 5}: decreasing
  expect_error([&] { c.forward(); }, ErrorCode::invalid_argument, "cu_seqlens_q");
}

TEST(Errors, CuSeqlensPastTheTensor) {
  Call c(varlen_case());
  c.opt.max_seqlen_k = 100;
  static_cast<std::int32_t*>(c.p.cu_k.data())[2] = 20;  // k has 6 rows
  expect_error([&] { c.forward(); }, ErrorCode::shape_mismatch, "cu_seqlens_k");
}

TEST(Errors, OnlyOneCuSeqlens) {
  Call c(varlen_case());
  c.opt.cu_seqlens_k.reset();
  expect_error([&] { c.forward(); }, ErrorCode::invalid_argument, "cu_seqlens_k");
  Call c2(varlen_case());
  c2.opt.cu_seqlens_q.reset();
  expect_error([&] { c2.forward(); }, ErrorCode::invalid_argument, "cu_seqlens_q");
}

TEST(Errors, CuSeqlensWrongDtypeOrLength) {
  Call c(varlen_case());
  c.opt.cu_seqlens_q->dtype = DType::f32;
  expect_error([&] { c.forward(); }, ErrorCode::dtype_mismatch, "cu_seqlens_q");
  Call c2(varlen_case());
  c2.opt.cu_seqlens_k->shape[0] = 2;
  expect_error([&] { c2.forward(); }, ErrorCode::shape_mismatch, "cu_seqlens_k");
  Call c3(varlen_case());
  c3.opt.max_seqlen_q = 2;  // sequence 1 has 5 rows
  expect_error([&] { c3.forward(); }, ErrorCode::invalid_argument, "cu_seqlens_q");
}

TEST(Errors, OffsetOverflow) {
  Call c;
  c.q.strides[0] = std::int64_t(1) << 62;  // (batch-1) * 2^62 * 4 bytes > 2^63
  expect_error([&] { c.forward(); }, ErrorCode::overflow, "q");
  Call c2;
  c2.k.shape[1] = std::int64_t(1) << 40;
  c2.k.strides[1] = std::int64_t(1) << 40;  // 2^80 elements apart
  expect_error([&] { c2.forward(); }, ErrorCode::overflow, "k");
}

TEST(Errors, BiasWrongShape) {
  Case cs = Call::small();
  cs.bias = BiasKind::full;
  Call c(cs);
  c.opt.bias->shape[3] = 6;  // seqlen_k is 7
  expect_error([&] { c.forward(); }, ErrorCode::shape_mismatch, "bias");
  Call c2(cs);
  c2.opt.bias->shape[1] = 3;  // neither heads (4) nor 1
  expect_error([&] { c2.forward(); }, ErrorCode::shape_mismatch, "bias");
  Call c3(cs);
  c3.opt.bias->dtype = DType::bf16;  // neither q's dtype nor fp32
  expect_error([&] { c3.forward(); }, ErrorCode::dtype_mismatch, "bias");
}

TEST(Errors, AlibiWrongShapeOrDtype) {
  Case cs = Call::small();
  cs.alibi = AlibiKind::per_head;
  Call c(cs);
  c.opt.alibi_slopes->shape[0] = 3;
  expect_error([&] { c.forward(); }, ErrorCode::shape_mismatch, "alibi_slopes");
  Call c2(cs);
  c2.opt.alibi_slopes->dtype = DType::f16;
  expect_error([&] { c2.forward(); }, ErrorCode::dtype_mismatch, "alibi_slopes");
  cs.alibi = AlibiKind::per_batch_head;
  Call c3(cs);
  c3.opt.alibi_slopes->shape[0] = 3;  // batch is 2
  expect_error([&] { c3.forward(); }, ErrorCode::shape_mismatch, "alibi_slopes");
}

TEST(Errors, LseWrongShape) {
  Call c;
  c.lse.shape[2] = 4;
  expect_error([&] { c.forward(); }, ErrorCode::shape_mismatch, "lse");
  Call c2;
  c2.lse.rank = 2;
  expect_error([&] { c2.forward(); }, ErrorCode::shape_mismatch, "lse");
}

TEST(Errors, DbiasWithoutBias) {
  Call c;
  HostTensor db = HostTensor::make(DType::f32, {2, 4, 5, 7});
  c.dbias = db.view;
  expect_error([&] { c.backward(); }, ErrorCode::invalid_argument, "dbias");
  // And a dbias that does not match the bias.
  Case cs = Call::small();
  cs.bias = BiasKind::bcast_batch;
  cs.bias_grad = true;
  Call c2(cs);
  c2.dbias->shape[0] = 2;
  expect_error([&] { c2.backward(); }, ErrorCode::shape_mismatch, "dbias");
}

TEST(Errors, ForcedBackendOnWrongDevice) {
  for (Backend b : {Backend::cuda_portable, Backend::cuda_sm80, Backend::cuda_sm90}) {
    Call c;
    c.opt.backend = b;
    expect_error([&] { c.forward(); }, ErrorCode::device_mismatch, "backend");
    expect_error([&] { c.backward(); }, ErrorCode::device_mismatch, "backend");
    EXPECT_FALSE(flashattn::supports(b, c.q, c.k, c.v, c.opt).ok);
  }
}

TEST(Errors, TensorsOnDifferentDevices) {
  Call c;
  c.v.device = {flashattn::DeviceKind::cuda, 0};
  expect_error([&] { c.forward(); }, ErrorCode::device_mismatch, "v");
}

TEST(Errors, BadScalars) {
  Call c;
  c.opt.softcap = -1.0f;
  expect_error([&] { c.forward(); }, ErrorCode::invalid_argument, "softcap");
  Call c2;
  c2.opt.softcap = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { c2.forward(); }, ErrorCode::invalid_argument, "softcap");
  Call c3;
  c3.opt.softmax_scale = std::numeric_limits<float>::infinity();
  expect_error([&] { c3.forward(); }, ErrorCode::invalid_argument, "softmax_scale");
  Call c4;
  c4.opt.num_threads = -1;
  expect_error([&] { c4.forward(); }, ErrorCode::invalid_argument, "num_threads");
}

TEST(Errors, SupportsReportsInsteadOfThrowing) {
  Call c;
  c.k.dtype = DType::f16;
  flashattn::Support s{true, nullptr};
  EXPECT_NO_THROW(s = flashattn::supports(Backend::cpu_flash, c.q, c.k, c.v, c.opt));
  EXPECT_FALSE(s.ok);
  ASSERT_NE(s.reason, nullptr);
  EXPECT_NE(std::string(s.reason).find("k"), std::string::npos) << s.reason;
  Call ok;
  EXPECT_TRUE(flashattn::supports(Backend::cpu_flash, ok.q, ok.k, ok.v, ok.opt).ok);
}

TEST(Errors, OutputsUntouchedOnError) {
  // Validation happens before any write: a rejected call leaves the poison intact.
  Call c;
  c.opt.window_left = -3;
  EXPECT_THROW(c.forward(), flashattn::Error);
  for (std::int64_t i = 0; i < c.o.out.numel(); ++i) ASSERT_TRUE(std::isnan(c.o.out.get(i)));
}

}  // namespace
}  // namespace fa_test
